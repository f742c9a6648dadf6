"""Metrics recorded from several threads of one process reach the multiprocess files, every increment.

A worker records from its main thread (`record_batch`) and from its sender threads (`record_request`,
`record_auth_error`, …), and the metric objects are created on the first of those calls. The check runs
in a fresh interpreter: `metrics.setup` switches prometheus-client to its file-backed values for the
whole process, which the test process must not keep.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

ROUNDS = 20
THREADS = 16

# Each round: a new metrics directory and value class (no metric objects yet, as in a freshly booted worker), THREADS
# threads released at once that each count one 403, then one more 403 from the main thread, as a
# worker's later request would. Prints the merged counter of each round, as a scrape would read it.
SCRIPT = textwrap.dedent(
    f"""
    import re, sys, threading
    from prometheus_client import generate_latest, values
    from workerpool.observability import metrics

    sys.setswitchinterval(1e-6)
    for _ in range({ROUNDS}):
        values.ValueClass = values.MutexValue  # as in a new process: `setup` makes a fresh file-backed class
        metrics.setup()
        barrier = threading.Barrier({THREADS})

        def count_a_403():
            barrier.wait()
            metrics.record_auth_error()

        threads = [threading.Thread(target=count_a_403) for _ in range({THREADS})]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics.record_auth_error()
        text = generate_latest(metrics.registry()).decode()
        print(re.search(r"^workerpool_algolia_auth_errors_total (\\S+)$", text, re.M).group(1))
        metrics.teardown()
    """
)


def test_increments_from_threads_racing_to_the_first_record_are_all_counted():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    totals = [float(line) for line in done.stdout.split()]
    assert totals == [THREADS + 1.0] * ROUNDS, totals
