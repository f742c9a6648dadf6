"""Process bodies for the claim/ack ceiling and the PgQueuer peer (started with multiprocessing's
"spawn", so each has fresh connections and nothing inherited from pytest), and the runner that
times them from one common start signal to the last process's end."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any


def _acker() -> Callable[[Any, Any], int]:
    """workerpool.runtime.queue.ack as the worker calls it, for a claim whose every row was sent as an upsert.

    Follows the signature in use: `ack(conn, token, items)` (items with .row, .index, .action,
    .hash, .shape, as the worker's Item) or the older `ack(conn, token, ids, actions, indexes)`.
    """
    import inspect
    from types import SimpleNamespace

    from workerpool.runtime import queue, records

    params = list(inspect.signature(queue.ack).parameters)
    if len(params) >= 3 and params[2] == "items":
        content_hash = getattr(records, "content_hash", None)
        shape = records.shape_hash({"id": 0, "objectID": ""}) if hasattr(records, "shape_hash") else None

        def ack(conn, claim) -> int:
            items = [
                SimpleNamespace(
                    row=r,
                    index="products",
                    action="updateObject",
                    body=b"",
                    hash=content_hash(r.record_id.encode()) if content_hash else None,
                    shape=shape,
                    stored=None,
                )
                for r in claim.rows
            ]
            return queue.ack(conn, claim.token, items)
    else:

        def ack(conn, claim) -> int:
            ids = [r.id for r in claim.rows]
            return queue.ack(conn, claim.token, ids, ["updateObject"] * len(ids), ["products"] * len(ids))

    return ack


def claim_ack_loop(dsn: str, batch: int, name: str, ready, go, results) -> None:
    """workerpool's own claim and ack statements, back to back, with no Algolia step and no row
    reading: the database's ceiling for the pipeline at this batch size and process count."""
    import psycopg

    from workerpool.runtime import queue

    ack = _acker()
    conn = psycopg.connect(dsn, autocommit=True, application_name=f"workerpool-bench:{name}")
    ready.wait()
    go.wait()
    started, cpu0 = time.monotonic(), time.process_time()
    done = batches = 0
    while True:
        claim = queue.claim_batch(conn, batch, 60_000, name, time.monotonic())
        if claim is None:
            if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM algolia_sync_queue WHERE status = 'pending')").fetchone()[
                0
            ]:
                break
            time.sleep(0.01)
            continue
        done += ack(conn, claim)
        batches += 1
    results.put(
        {
            "name": name,
            "pid": os.getpid(),
            "records": done,
            "batches": batches,
            "started": started,
            "ended": time.monotonic(),
            "cpu_s": time.process_time() - cpu0,
        }
    )
    conn.close()


def asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    """asyncpg.connect() arguments for a libpq DSN (the fixtures hand out "key=value" strings)."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    out: dict[str, Any] = {"database": info.get("dbname")}
    for key, arg in (("host", "host"), ("user", "user"), ("password", "password")):
        if info.get(key):
            out[arg] = info[key]
    if info.get("port"):
        out["port"] = int(info["port"])
    return out


async def pgqueuer_install_and_enqueue(dsn: str, jobs: int) -> int:
    """Install PgQueuer's schema in `dsn` and queue `jobs` no-op jobs; returns how many are queued."""
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(**asyncpg_kwargs(dsn))
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        chunk = 100_000
        for first in range(0, jobs, chunk):
            n = min(chunk, jobs - first)
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        return await conn.fetchval(f"SELECT count(*) FROM {queries.qbe.settings.queue_table}")
    finally:
        await conn.close()


async def pgqueuer_left(dsn: str) -> int:
    """PgQueuer jobs still queued in `dsn`."""
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(**asyncpg_kwargs(dsn))
    try:
        queries = Queries.from_asyncpg_connection(conn)
        return await conn.fetchval(f"SELECT count(*) FROM {queries.qbe.settings.queue_table}")
    finally:
        await conn.close()


def pgqueuer_loop(dsn: str, batch: int, name: str, ready, go, results) -> None:
    """A PgQueuer QueueManager (asyncpg, its recommended driver) draining no-op jobs."""
    import asyncio
    import logging
    from datetime import timedelta

    import asyncpg
    from pgqueuer import Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    done = 0

    async def main() -> dict[str, Any]:
        nonlocal done
        conn = await asyncpg.connect(**asyncpg_kwargs(dsn))
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint("noop")
        async def noop(job) -> None:
            nonlocal done
            done += 1

        await asyncio.get_running_loop().run_in_executor(None, ready.wait)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        started, cpu0 = time.monotonic(), time.process_time()
        # Drain mode exits once nothing is queued and no job runs. dequeue_timeout bounds the wait
        # at the very end (workerpool's drain re-checks every 0.05 s); batch_size is the claim size.
        await qm.run(
            batch_size=batch,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=1),
            log_aggregation_interval=timedelta(0),
        )
        ended, cpu = time.monotonic(), time.process_time() - cpu0
        await conn.close()
        return {"started": started, "ended": ended, "cpu_s": cpu}

    try:
        import uvloop

        times = uvloop.run(main())
    except ImportError:
        times = asyncio.run(main())
    results.put({"name": name, "pid": os.getpid(), "records": done, **times})


def run_processes(
    target: Callable[..., None], dsn: str, batch: int, workers: int, timeout: float = 3600
) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """Start `workers` processes that connect and wait; returns (start, finish).

    `start()` lets them all go at once; `finish()` collects them and returns the figures, timed
    from the common start to the last process's end (time.monotonic is one clock machine-wide).
    """
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(workers + 1)
    go = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(dsn, batch, f"{target.__name__}-{i}", ready, go, results), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    ready.wait(timeout=120)
    state: dict[str, float] = {}

    def start() -> None:
        state["t0"] = time.monotonic()
        go.set()

    def finish() -> dict[str, Any]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < workers:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise AssertionError(
                    f"{len(dead)} benchmark process(es) failed: exit codes {[p.exitcode for p in dead]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("benchmark processes timed out")
            try:
                got.append(results.get(timeout=0.5))
            except Exception:  # queue.Empty
                continue
        for p in procs:
            p.join(30)
        seconds = max(r["ended"] for r in got) - state["t0"]
        records = sum(r["records"] for r in got)
        return {
            "seconds": round(seconds, 3),
            "records": records,
            "records_per_s": round(records / seconds, 1),
            # CPU from the start signal to each process's end: start-up (imports, connecting) excluded.
            "cpu_clients_busy_s": round(sum(r.get("cpu_s", 0.0) for r in got), 3),
            "per_process": [
                {"records": r["records"], "batches": r.get("batches"), "seconds": round(r["ended"] - state["t0"], 3)}
                for r in got
            ],
        }

    return start, finish


def measure_processes(
    benchmark, target: Callable[..., None], dsn: str, batch: int, workers: int, group: str
) -> dict[str, Any]:
    """Run `workers` processes of `target` once under pytest-benchmark (start-up excluded) and return
    what they reported, with the client processes' CPU time."""
    from benchmarks._bench import CpuSnapshot

    handles: dict = {}
    result: dict = {}

    def setup() -> None:
        handles["start"], handles["finish"] = run_processes(target, dsn, batch, workers)

    def run() -> None:
        before = CpuSnapshot.take()
        handles["start"]()
        result.update(handles["finish"]())
        cpu = CpuSnapshot.take().since(before, children_label="cpu_clients_s")
        cpu.pop("cpu_emulator_s", None)
        result.update(cpu)

    benchmark.group = group
    benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
    return result
