"""Running `workerpool run --drain` as a subprocess and measuring it (time, CPU, worker memory)."""

from __future__ import annotations

import collections
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks._bench import CpuSnapshot, read_status_kb
from testing import Pool, workerpool_cmd


def drain_args(batch: int, workers: int, pool: int) -> list[str]:
    return ["--drain", "--batch-size", str(batch), "--workers", str(workers), "--pool-size", str(pool)]


class RssSampler(threading.Thread):
    """Samples VmRSS/VmHWM of the supervisor's worker processes every `interval` seconds.

    `progress()` (records written so far) is sampled alongside, so that "start" can mean "after
    the first 10% of the records": the RSS a worker settles at once its buffers are warm.
    """

    def __init__(self, pool: Pool, progress: Callable[[], int], total: int, interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pool, self.progress, self.total, self.interval = pool, progress, total, interval
        self.samples: dict[int, list[tuple[float, int, int, int]]] = collections.defaultdict(list)
        self._halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._halt.is_set() and self.pool.proc.poll() is None:
            done = self.progress()
            for pid in self.pool.worker_pids():
                st = read_status_kb(pid)
                if st:
                    self.samples[pid].append((time.monotonic() - started, done, st["VmRSS"], st["VmHWM"]))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for pid, samples in sorted(self.samples.items()):
            warm = next((s for s in samples if s[1] >= self.total * 0.10), samples[0])
            last = samples[-1]
            out.append(
                {
                    "pid": pid,
                    "samples": len(samples),
                    "rss_first_kb": samples[0][2],
                    "rss_at_10pct_kb": warm[2],
                    "rss_end_kb": last[2],
                    "peak_hwm_kb": max(s[3] for s in samples),
                    "growth_after_10pct_kb": last[2] - warm[2],
                    "progress_at_end": last[1],
                }
            )
        return out


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return out


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def log_figures(output: str) -> dict[str, Any]:
    """What the workers' JSON logs say: processing window, batches, mean batch duration."""
    events = _events(output)
    started = [_ts(e) for e in events if e.get("action") == "worker_started"]
    stopped = [_ts(e) for e in events if e.get("action") == "worker_stopped"]
    batches = [e for e in events if e.get("action") == "batch_synced"]
    out: dict[str, Any] = {"batches": len(batches)}
    # Anything but a clean run (someone else's test killing connections, a crash) shows up here.
    for action in ("database_error", "worker_died", "lease_lost", "algolia_error", "throttled"):
        n = sum(1 for e in events if e.get("action") == action)
        if n:
            out[f"events_{action}"] = n
    if batches:
        out["mean_batch_ms"] = round(sum(b.get("duration_ms", 0) for b in batches) / len(batches), 2)
        out["records_logged"] = sum(b.get("upserts", 0) + b.get("deletes", 0) for b in batches)
        out["failed_or_retried"] = sum(b.get("failed", 0) + b.get("retried", 0) for b in batches)
    if started and stopped:
        out["worker_window_s"] = round(max(stopped) - min(started), 3)
    return out


def run_drain(
    start_pool: Callable[..., Pool],
    overrides: dict[str, str],
    batch: int,
    workers: int,
    pool: int,
    *,
    expected: int,
    progress: Callable[[], int] | None = None,
    sample_rss: bool = False,
    timeout: float = 3600,
) -> dict[str, Any]:
    """One `workerpool run --drain` (the tests' `start_pool` fixture, environment `overrides` on top
    of the tests' `env`), timed end to end: process start to exit."""
    before = CpuSnapshot.take()
    p = start_pool(*drain_args(batch, workers, pool), extra_env=overrides)
    sampler = None
    if sample_rss:
        # A short drain's workers live well under a second: sample often enough to see them at all.
        sampler = RssSampler(p, progress or (lambda: 0), expected, interval=0.02 if expected < 10_000 else 0.2)
        sampler.start()
    try:
        code = p.proc.wait(timeout)
    finally:
        if sampler is not None:
            sampler.stop()
    after = CpuSnapshot.take()
    output = p.output
    if code != 0:
        raise AssertionError(f"workerpool run --drain exited {code}:\n{output[-4000:]}")
    figures = after.since(before)
    seconds = figures["wall_s"]
    result: dict[str, Any] = {
        "rows": expected,
        "batch_size": batch,
        "workers": workers,
        "pool_size": pool,
        "seconds": seconds,
        "records_per_s": round(expected / seconds, 1),
        **figures,
        **log_figures(output),
    }
    if "worker_window_s" in result and result["worker_window_s"] > 0:
        result["records_per_s_in_workers"] = round(expected / result["worker_window_s"], 1)
    if sampler is not None:
        result["rss"] = sampler.summary()
    return result


# ---- profiling ---------------------------------------------------------------------------------


# Which thread of a worker a py-spy stack belongs to, and (first match wins) what it was doing.
# Matching is by function name, so a renamed function lands in "other"; the report lists the most
# frequent "other" frames so that a new name is easy to add here.
def _role(stack: str) -> str | None:
    if "run_worker (" in stack:
        return "main"
    if "concurrent/futures/thread.py" in stack:
        return "sender"  # the worker's sender thread (a thread pool started after fork)
    return None


_MAIN: list[tuple[str, Callable[[str], bool]]] = [
    ("db: claim (get_pending_algolia_syncs)", lambda s: "claim_batch (" in s),
    ("db: ack (algolia_sync_ack)", lambda s: "ack (workerpool/runtime/queue.py" in s),
    ("db: read rows, jsonb decode (stdlib json)", lambda s: "load_rows (" in s and "json/" in s),
    ("db: read rows, building dict rows", lambda s: "load_rows (" in s and "fetchall" in s),
    ("db: read rows, query", lambda s: "load_rows (" in s),
    (
        "db: housekeeping (heartbeat, recover, queue empty?, release)",
        lambda s: any(k in s for k in ("_heartbeat (", "_recover (", "_queue_empty (", "release (", "extend (")),
    ),
    (
        "waiting for the sender thread (HTTP of the previous batch)",
        lambda s: "_finish_in_flight (" in s and "result (" in s,
    ),
    ("http: send batch (on the main thread)", lambda s: "send_batch (" in s),
    ("records: transform, hash, serialize", lambda s: "records.py" in s or "item (" in s),
    ("metrics", lambda s: "metrics.py" in s),
    ("logging", lambda s: "logging/" in s or "pythonjsonlogger" in s),
    ("idle: waiting for work", lambda s: "_wait_for_work (" in s or "_sleep (" in s),
    ("boot / shutdown", lambda s: "_boot (" in s or "_shutdown (" in s),
]
_SENDER: list[tuple[str, Callable[[str], bool]]] = [
    ("db: lease extension", lambda s: "extend (" in s or "_ensure_lease (" in s),
    ("http: send batch (algoliasearch transport, requests)", lambda s: "send_batch (" in s),
    ("records: batch body", lambda s: "records.py" in s),
    ("idle: waiting for the next batch", lambda s: "_send_prepared (" not in s),
]


def categorize_profile(raw_text: str) -> dict[str, Any]:
    """Share of each worker thread's samples per category, from `py-spy record --format raw --idle`."""
    counts: dict[str, collections.Counter[str]] = {"main": collections.Counter(), "sender": collections.Counter()}
    other_frames: collections.Counter[str] = collections.Counter()
    for line in raw_text.splitlines():
        stack, _, n = line.rpartition(" ")
        role = _role(stack)
        if role is None or not n.isdigit():
            continue
        for name, match in _MAIN if role == "main" else _SENDER:
            if match(stack):
                counts[role][name] += int(n)
                break
        else:
            counts[role]["other"] += int(n)
            other_frames[f"{role}: " + ";".join(stack.split(";")[-2:])] += int(n)
    out: dict[str, Any] = {}
    for role, c in counts.items():
        total = sum(c.values())
        if total:
            out[role] = {"samples": total, "percent": {k: round(100.0 * v / total, 1) for k, v in c.most_common()}}
    out["top_other_frames"] = [[frame[:300], n] for frame, n in other_frames.most_common(8)]
    return out


def run_profiled_drain(
    env: dict[str, str], batch: int, workers: int, pool: int, py_spy: str, rate: int = 200, timeout: float = 1800
) -> tuple[dict[str, Any], str]:
    """Drain under `py-spy record --subprocesses --idle --threads`; returns (summary, raw stacks)."""
    with tempfile.TemporaryDirectory(prefix="workerpool-prof-") as tmp:
        raw = Path(tmp) / "profile.txt"
        log = Path(tmp) / "run.log"
        cmd = [
            py_spy,
            "record",
            "--subprocesses",
            "--idle",
            "--threads",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(raw),
            "--",
            *workerpool_cmd("run", *drain_args(batch, workers, pool)),
        ]
        with open(log, "wb") as out:
            proc = subprocess.run(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=tempfile.gettempdir()
            )
        if proc.returncode != 0:
            raise AssertionError(f"profiled drain exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        text = raw.read_text()
    return categorize_profile(text), text
