"""Where a record's CPU goes, step by step: the worker's own code and its Postgres backend, per record.

    python benchmarks/phases.py [--rows 50000] [--batch 1000] [--capture]

One process runs the worker's steps serially on a fresh database of N queued product changes (the
benchmarks' data set): claim, read rows, build records, batch body, HTTP to the emulator, acknowledge.
For each step it adds up this thread's CPU time and the CPU time of the Postgres backend serving it
(from /proc, so Linux only), and prints microseconds per record. The emulator runs in a process of
its own, as Algolia does: in this one, Python's garbage collector would walk the index's records
during the worker's steps (at 100,000 records that doubled the read step's CPU). Whole-drain benchmarks
show *that* the machine is saturated; this shows by whom. With --capture the backlog is made by bulk
INSERTs into the watched table, so its keys wait in the inbox and the "spill" step (moving them into
the queue before each claim) carries the capture work the writer's statement leaves out; without it the
changes are queued directly and "spill" is the cost of looking at an empty inbox once per batch.

With --peer N, PgQueuer then drains as many no-op jobs in N processes at the same batch size on a
second fresh database, and the script prints the CPU budget per record that twice PgQueuer's rate
leaves on this machine's CPUs next to what the steps above used: whether a rate is reachable at all,
before anyone tunes for it, and the issue's two ratios: worker plus Postgres CPU per record against
PgQueuer's per job, and Postgres alone against its Postgres share. With --floor, the least lease queue
(benchmarks/floor.py: claim, read the rows, delete) drains the same catalogue on a third database,
alone and with each of workerpool's guarantees added in its least form: the Postgres CPU that any
design with a row per queued key starts from, and what each guarantee costs on top of it.

Runs against the tests' Postgres (DATABASE_URL, else 127.0.0.1:5432, else an embedded server) and
drops its databases afterwards.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from benchmarks import _bench  # noqa: E402
from benchmarks import floor as least_queue  # noqa: E402
from testing.pg import server_urls, with_dbname  # noqa: E402
from workerpool.capture.model import load_watched  # noqa: E402
from workerpool.capture.triggers import watch  # noqa: E402
from workerpool.config import load  # noqa: E402
from workerpool.db.connection import make_pool  # noqa: E402
from workerpool.ops.migrate import migrate  # noqa: E402
from workerpool.process.worker import collect_less  # noqa: E402
from workerpool.runtime import queue, records  # noqa: E402
from workerpool.runtime.algolia import Sender  # noqa: E402
from workerpool.runtime.model import Outcome  # noqa: E402
from workerpool.runtime.shaping import Shaper  # noqa: E402

APP_ID, API_KEY = "PHASESAPP", "phases-admin-key"
STEPS = ("spill", "claim", "read", "build", "body", "http", "ack")


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[str, int]]:
    """`python -m workerpool.emulator` on a free port: its URL and its pid, until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workerpool.emulator", "--port", "0", "--app-id", APP_ID, "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ALGOLIA_")},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("action") == "emulator_started":
                break
        else:
            raise RuntimeError(f"the emulator exited with {proc.wait()} before listening")
        yield event["url"], proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def indexed(url: str, index: str) -> int:
    """How many records the emulator at `url` holds in `index`."""
    request = urllib.request.Request(
        f"{url}/1/indexes", headers={"X-Algolia-Application-Id": APP_ID, "X-Algolia-API-Key": API_KEY}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        items = json.load(response)["items"]
    return sum(i["entries"] for i in items if i["name"] == index)


def measure(url: str, rows: int, batch: int, capture: bool = False) -> dict[str, Any]:
    """Drain `rows` queued changes of a fresh database at `url`, step by step; returns the figures."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        _bench.create_products(conn)
        if capture:
            watch(conn, "products", "products")
            _bench.fill_products(conn, rows)  # bulk statements: the keys go to the inbox
        else:
            _bench.fill_products(conn, rows)
            watch(conn, "products", "products")
            conn.execute(_bench.ENQUEUE_ALL)
        conn.execute("VACUUM ANALYZE")
    with emulator_process() as (emulator_url, emulator_pid):
        settings = load(
            environ={
                "DATABASE_URL": url,
                "ALGOLIA_APP_ID": APP_ID,
                "ALGOLIA_ADMIN_KEY": API_KEY,
                "ALGOLIA_HOSTS": emulator_url,
            },
            env_file=None,
        )
        # A connection of the worker's own pool: its session settings and its loaders.
        pool = make_pool(url, 1, "phases")
        conn = pool.getconn()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        sender, shaper = Sender(settings), Shaper(settings)
        watched = load_watched(conn)["products"]
        client: collections.Counter[str] = collections.Counter()
        server: collections.Counter[str] = collections.Counter()

        @contextlib.contextmanager
        def step(name: str) -> Iterator[None]:
            b0, c0 = _bench.thread_cpu_s(backend), time.thread_time()
            yield
            client[name] += time.thread_time() - c0
            server[name] += _bench.thread_cpu_s(backend) - b0

        collect_less()  # as a worker does once it has booted
        emulator0, started, done = _bench.process_cpu_s(emulator_pid), time.monotonic(), 0
        postgres0 = _bench.postgres_cpu_s()
        while True:
            with step("spill"):
                queue.spill(conn, batch)
            with step("claim"):
                claim = queue.claim_batch(conn, batch, 60_000, "phases", time.monotonic())
            if claim is None:
                break
            outcome = Outcome()
            with step("read"):
                current = shaper.load_rows(conn, watched, "products", [r.record_id for r in claim.rows])
            with step("build"):
                items = [shaper.item(watched, "products", r, current, outcome) for r in claim.rows]
            with step("body"):
                body = records.batch_body(i.body for i in items)
            with step("http"):
                sender.send_batch(body)
            with step("ack"):
                done += queue.ack(conn, claim.token, items)
        wall = time.monotonic() - started
        emulator_s = _bench.process_cpu_s(emulator_pid) - emulator0
        postgres1 = _bench.postgres_cpu_s()
        in_index = indexed(emulator_url, "products")
        sender.close()
        pool.putconn(conn)
        pool.close()
    assert done == rows, f"acknowledged {done} of {rows}"
    per = lambda s: round(s / done * 1e6, 1)  # noqa: E731
    return {
        "rows": done,
        "indexed": in_index,
        "batch": batch,
        "wall_s": round(wall, 2),
        "records_per_s": round(done / wall),
        "client_us": {k: per(client[k]) for k in STEPS},
        "server_us": {k: per(server[k]) for k in STEPS},
        "emulator_us": per(emulator_s),
        # Every Postgres process, as PgQueuer's share is counted (its WAL writer and checkpointer
        # included, and whatever else the machine's server does meanwhile).
        "postgres_all_us": per(postgres1 - postgres0) if postgres0 is not None and postgres1 is not None else None,
    }


def measure_peer(url: str, jobs: int, batch: int, processes: int) -> dict[str, Any]:
    """PgQueuer draining `jobs` no-op jobs in `processes` processes on the fresh database at `url`:
    its rate, and its CPU per job in its own processes (start-up excluded) and in Postgres."""
    import asyncio

    from benchmarks._procs import (
        pgqueuer_install_and_enqueue,
        pgqueuer_left,
        pgqueuer_loop,
        run_processes,
    )

    assert asyncio.run(pgqueuer_install_and_enqueue(url, jobs)) == jobs
    start, finish = run_processes(pgqueuer_loop, url, batch, processes)
    pg0 = _bench.postgres_cpu_s()
    start()
    result = finish()
    pg1 = _bench.postgres_cpu_s()
    assert result["records"] == jobs and asyncio.run(pgqueuer_left(url)) == 0, result
    per = lambda s: round(s / jobs * 1e6, 1)  # noqa: E731
    return {
        "jobs": jobs,
        "processes": processes,
        "records_per_s": result["records_per_s"],
        "client_us": per(result["cpu_clients_busy_s"]),
        "postgres_us": per(pg1 - pg0) if pg0 is not None and pg1 is not None else None,
    }


def budget(f: dict[str, Any], peer: dict[str, Any], cpus: int, factor: float = 2.0) -> dict[str, Any]:
    """What `factor` times PgQueuer's rate leaves per record on `cpus` CPUs, every one of them busy
    all the time, against what the pipeline's steps used (worker, emulator, Postgres)."""
    rate = factor * peer["records_per_s"]
    allowed = cpus / rate * 1e6
    worker, postgres = sum(f["client_us"].values()), sum(f["server_us"].values())
    used = worker + f["emulator_us"] + postgres
    return {
        "factor": factor,
        "rate": rate,
        "cpus": cpus,
        "budget_us": round(allowed, 1),
        # The targets: CPU per record against PgQueuer's per no-op job, in the same run.
        "cpu_ratio": round((worker + postgres) / (peer["client_us"] + peer["postgres_us"]), 2)
        if peer["postgres_us"]
        else None,
        "postgres_ratio": round(postgres / peer["postgres_us"], 2) if peer["postgres_us"] else None,
        "worker_us": round(worker, 1),
        "emulator_us": f["emulator_us"],
        "postgres_us": round(postgres, 1),
        "used_us": round(used, 1),
        "over_budget": round(used / allowed, 2),
    }


def print_floor(floor: dict[str, Any], f: dict[str, Any], peer: dict[str, Any] | None) -> None:
    """The least lease queue's Postgres CPU per record, what each guarantee adds to it, and all of
    them together, next to workerpool's own steps and PgQueuer's share."""
    share = peer["postgres_us"] if peer and peer["postgres_us"] else None
    rows = floor["server_us"]
    total = {name: sum(steps.values()) for name, steps in rows.items()}
    print(f"\nthe least lease queue and each guarantee added to it, Postgres us per record ({floor['rows']:,} keys)")
    print(
        f"{'':12} {'claim':>6} {'read':>6} {'ack':>6} {'total':>6} {'added':>6}" + (f" {'x PgQ':>6}" if share else "")
    )
    ours = {"claim": f["server_us"]["claim"], "read": f["server_us"]["read"], "ack": f["server_us"]["ack"]}
    for name, steps in [*rows.items(), ("workerpool", ours)]:
        t = sum(steps.values())
        line = f"{name:12} " + " ".join(f"{steps[k]:6.1f}" for k in least_queue.STEPS)
        line += f" {t:6.1f} {t - total['floor']:+6.1f}"
        print(line + (f" {t / share:6.2f}" if share else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--capture", action="store_true", help="make the backlog with bulk INSERTs (via the inbox)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then the least lease queue (a row per key: claim, read, delete) on the same catalogue: its Postgres CPU",
    )
    parser.add_argument(
        "--peer",
        type=int,
        metavar="N",
        default=0,
        help="then PgQueuer in N processes, and the CPU budget of 2x its rate (needs the bench extra)",
    )
    args = parser.parse_args()
    servers = server_urls()
    admin = next(servers)
    names = [f"workerpool_phases_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        f = measure(with_dbname(admin, names[0]), args.rows, args.batch, args.capture)
        peer = measure_peer(with_dbname(admin, names[1]), args.rows, args.batch, args.peer) if args.peer else None
        floor = least_queue.measure(with_dbname(admin, names[2]), args.rows, args.batch) if args.floor else None
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        servers.close()
    print(
        f"{f['rows']:,} records ({'captured by bulk INSERTs' if args.capture else 'queued directly'}), "
        f"BATCH {f['batch']}, one process, steps in series: {f['wall_s']} s "
        f"({f['records_per_s']:,}/s)"
    )
    print(f"{'step':8} {'worker us/record':>17} {'postgres us/record':>19}")
    for k in STEPS:
        print(f"{k:8} {f['client_us'][k]:17.1f} {f['server_us'][k]:19.1f}")
    print(f"{'total':8} {sum(f['client_us'].values()):17.1f} {sum(f['server_us'].values()):19.1f}")
    print(f"emulator (its own process): {f['emulator_us']:.1f} us/record")
    if f["postgres_all_us"] is not None:
        print(f"every Postgres process over the same drain, as PgQueuer's is counted: {f['postgres_all_us']:.1f} us")
    if peer:
        b = budget(f, peer, os.cpu_count() or 1)
        pg = f"{peer['postgres_us']:.1f}" if peer["postgres_us"] is not None else "?"
        print(
            f"\nPgQueuer, {peer['processes']} processes, BATCH {f['batch']}, {peer['jobs']:,} no-op jobs: "
            f"{peer['records_per_s']:,.0f} jobs/s; CPU per job: its processes {peer['client_us']:.1f} us "
            f"(start-up excluded), Postgres {pg} us"
        )
        print(
            f"{b['factor']:g}x that rate is {b['rate']:,.0f} records/s: on {b['cpus']} CPU(s), all busy all the time, "
            f"{b['budget_us']:.1f} us of CPU per record for everything"
        )
        print(
            f"the steps above used {b['used_us']:.1f} us (worker {b['worker_us']:.1f} + emulator "
            f"{b['emulator_us']:.1f} + Postgres {b['postgres_us']:.1f}) = {b['over_budget']:.2f}x that budget"
        )
        if b["cpu_ratio"] is not None:
            print(
                f"worker + Postgres per record: {b['worker_us'] + b['postgres_us']:.1f} us = {b['cpu_ratio']:.2f}x "
                f"PgQueuer's {peer['client_us'] + peer['postgres_us']:.1f} us per job; Postgres alone "
                f"{b['postgres_us']:.1f} us = {b['postgres_ratio']:.2f}x its {pg} us"
            )
    if floor:
        print_floor(floor, f, peer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
