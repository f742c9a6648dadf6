"""Shared pieces of the benchmarks: which points run, the product data set, and measuring helpers.

Every knob is an environment variable so that one command runs the default subset, the smoke form
or the full matrix (benchmarks/README.md lists them).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _ints(name: str, default: Sequence[int]) -> list[int]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return list(default)
    try:
        return [int(x) for x in raw.replace(" ", "").split(",") if x]
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected comma-separated whole numbers, e.g. 100,1000") from None


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a whole number") from None


SMOKE = _flag("WORKERPOOL_BENCH_SMOKE")
FULL = _flag("WORKERPOOL_BENCH_FULL") and not SMOKE
PROFILE = _flag("WORKERPOOL_BENCH_PROFILE")
# Rounds of the drain, ceiling and PgQueuer points, run interleaved (round 1 of each, then round 2…):
# this machine's speed drifts by tens of percent over minutes, so one ratio from one pass can mislead.
REPEAT = max(1, _int("WORKERPOOL_BENCH_REPEAT", 1))

ROWS = _int("WORKERPOOL_BENCH_ROWS", 500 if SMOKE else 100_000)
# Batch size 10 moves 10 rows per three database round trips and one HTTP request; draining the
# whole default set that way takes minutes per point. It drains this many rows instead (a rate
# is a rate; extra_info records the row count of every point).
SMALL_BATCH_ROWS = _int("WORKERPOOL_BENCH_SMALL_BATCH_ROWS", ROWS if (SMOKE or FULL) else 20_000)
BATCH_SIZES = _ints("WORKERPOOL_BENCH_BATCH", [100] if SMOKE else [10, 100, 500, 1000, 5000])
WORKER_COUNTS = _ints("WORKERPOOL_BENCH_WORKERS", [2] if SMOKE else [1, 2, 4])
POOL_SIZES = _ints("WORKERPOOL_BENCH_POOL", [2] if not FULL else [1, 2, 4])
PEER_BATCH_SIZES = _ints("WORKERPOOL_BENCH_PEER_BATCH", [100] if SMOKE else ([100, 1000, 5000] if FULL else [1000]))
PEER_WORKERS = _ints("WORKERPOOL_BENCH_PEER_WORKERS", [2] if SMOKE else ([1, 2, 4] if FULL else [1, 2]))
MEMORY_ROWS = _int("WORKERPOOL_BENCH_MEMORY_ROWS", 500 if SMOKE else (1_000_000 if FULL else ROWS))
CAPTURE_BULK_ROWS = _int("WORKERPOOL_BENCH_CAPTURE_ROWS", 500 if SMOKE else 100_000)
CAPTURE_SINGLE_ROWS = _int("WORKERPOOL_BENCH_CAPTURE_SINGLE", 200 if SMOKE else 10_000)
LATENCY_CHANGES = _int("WORKERPOOL_BENCH_LATENCY_CHANGES", 10 if SMOKE else 100)
SERIALIZATION_RECORDS = 1000

# The knobs the reference points use (the README's targets are stated at these).
REFERENCE_BATCH = 1000
REFERENCE_WORKERS = 2
DEFAULT_POOL = 2


def drain_points() -> list[tuple[int, int, int]]:
    """(BATCH_SIZE, WORKERS, POOL_SIZE) points of the drain benchmark."""
    if SMOKE:
        return [(BATCH_SIZES[0], WORKER_COUNTS[0], POOL_SIZES[0])]
    points = [(b, w, p) for p in POOL_SIZES for w in WORKER_COUNTS for b in BATCH_SIZES]
    if not FULL and "WORKERPOOL_BENCH_POOL" not in os.environ:
        # The default subset: the batch x workers grid at the default pool size, plus the pool
        # sizes around it at the reference point.
        points += [(REFERENCE_BATCH, REFERENCE_WORKERS, p) for p in (1, 4)]
    return points


def ceiling_points() -> list[tuple[int, int]]:
    if SMOKE:
        return [(BATCH_SIZES[0], WORKER_COUNTS[0])]
    return [(b, w) for w in WORKER_COUNTS for b in BATCH_SIZES]


def peer_points() -> list[tuple[int, int]]:
    if SMOKE:
        return [(PEER_BATCH_SIZES[0], PEER_WORKERS[0])]
    return [(b, w) for w in PEER_WORKERS for b in PEER_BATCH_SIZES]


def bench_overrides(database_url: str) -> dict[str, str]:
    """What a benchmark changes in the tests' subprocess environment (`env`): its own database, and
    the production defaults for what the tests shorten (polling, lease, shutdown)."""
    return {
        "DATABASE_URL": database_url,
        "POLLING_INTERVAL": "5000",
        "LEASE_TIMEOUT": "60000",
        "SHUTDOWN_TIMEOUT": "30000",
        "LOG_LEVEL": "INFO",
    }


def rows_for(batch_size: int) -> int:
    return min(ROWS, SMALL_BATCH_ROWS) if batch_size < 100 else ROWS


# ---- the data set ------------------------------------------------------------------------------

PRODUCTS_DDL = """
CREATE TABLE {name} (
    id          bigint PRIMARY KEY,
    sku         text NOT NULL,
    name        text NOT NULL,
    description text,
    brand       text,
    category    text,
    price       numeric(12, 2),
    stock       integer,
    tags        text[],
    attrs       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
)"""

# A realistic catalogue row of ~500 bytes as a record: deterministic (a function of the id), made
# set-wise in SQL so that 1,000,000 rows take seconds, not minutes.
PRODUCTS_SELECT = """
WITH w AS (SELECT ARRAY['oak','walnut','steel','linen','wool','cotton','glass','brass','leather','bamboo',
  'compact','sturdy','modern','classic','handmade','foldable','stackable','ergonomic','lightweight','durable',
  'chair','table','lamp','sofa','shelf','desk','stool','rug','mirror','cabinet',
  'for','the','living','room','office','kitchen','bedroom','garden','with','and'] AS a)
SELECT g,
  'SKU-' || lpad(g::text, 8, '0'),
  initcap(a[1 + g %% 10] || ' ' || a[11 + (g / 10) %% 10] || ' ' || a[21 + (g / 100) %% 10]) || ' ' || (g %% 997),
  (SELECT string_agg(a[1 + ((g * 7919 + i * 104729) %% 40)], ' ') FROM generate_series(1, 20) i),
  (ARRAY['Nordhaus','Atelier Rue','Kivik','Oakline','Brightwell','Maison Verte','Tamarind','Halden'])[1 + g %% 8],
  (ARRAY['Furniture > Chairs','Furniture > Tables','Lighting > Lamps','Living > Sofas','Storage > Shelves',
         'Office > Desks','Decor > Rugs','Decor > Mirrors'])[1 + (g / 3) %% 8],
  round((5 + (g * 7919 %% 99500) / 100.0)::numeric, 2),
  (g * 31) %% 500,
  ARRAY[a[1 + g %% 10], a[11 + g %% 10], a[31 + g %% 8]],
  jsonb_build_object('color', (ARRAY['red','blue','green','black','white','grey','natural','oak'])[1 + g %% 8],
                     'width_cm', 40 + g %% 160, 'height_cm', 30 + g %% 90,
                     'weight_kg', round(((g %% 400) / 10.0)::numeric, 1),
                     'material', a[1 + (g / 7) %% 10], 'assembly', (g %% 3 = 0)),
  timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => g * 37),
  timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => g * 11)
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g, w"""

ENQUEUE_ALL = (
    "INSERT INTO algolia_sync_queue (table_name, record_id, operation) "
    "SELECT 'products', id::text, 'INSERT' FROM products"
)


def create_products(conn: psycopg.Connection, name: str = "products") -> None:
    conn.execute(sql.SQL(PRODUCTS_DDL).format(name=sql.Identifier(name)))


def fill_products(
    conn: psycopg.Connection, rows: int, name: str = "products", first: int = 1, chunk: int = 250_000
) -> None:
    """Insert ids first..first+rows-1 (in chunks, so 1,000,000 rows never make one huge transaction)."""
    start = first
    end = first + rows - 1
    while start <= end:
        last = min(end, start + chunk - 1)
        conn.execute(
            sql.SQL("INSERT INTO {} ").format(sql.Identifier(name)) + sql.SQL(PRODUCTS_SELECT),
            {"first": start, "last": last},
        )
        start = last + 1


# ---- measuring ---------------------------------------------------------------------------------


def checkpoint(server_url: str) -> None:
    """Start a point with nothing left to write back: a checkpoint falling inside one point and not
    another (the previous point left ~100 MB of WAL) was one source of the run-to-run spread."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("CHECKPOINT")


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: str) -> tuple[str, int, float, float] | None:
    """(comm, ppid, own cpu s, reaped children's cpu s) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()
    # fields after comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return comm, int(f[1]), (int(f[11]) + int(f[12])) / _TICK, (int(f[13]) + int(f[14])) / _TICK


def thread_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a single-threaded process (a Postgres backend), to the nanosecond:
    the scheduler's own count (/proc/<pid>/schedstat), where /proc/<pid>/stat counts 10 ms ticks, too
    coarse for one step of one batch. Only that process's main thread: not for a threaded process."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):  # a kernel without schedstats
        return process_cpu_s(pid)


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a live process, all its threads (/proc/<pid>/stat, 10 ms ticks)."""
    stat = _proc_stat(str(pid))
    if stat is None:
        raise ProcessLookupError(pid)
    return stat[2]


def postgres_cpu_s() -> float | None:
    """CPU seconds used so far by the local Postgres server, exited backends included.

    Sum of every live `postgres` process's own CPU plus the postmaster's reaped-children CPU: a
    backend that exits moves its CPU from the first sum to the second, so the difference between
    two readings is what Postgres spent in between (all databases: the machine is shared). None
    when no Postgres runs on this machine.
    """
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            st = _proc_stat(pid)
            if st and st[0] == "postgres":
                procs[int(pid)] = st
    if not procs:
        return None
    total = 0.0
    for _, ppid, own, children in procs.values():
        total += own
        if ppid not in procs:  # the postmaster
            total += children
    return total


@dataclass
class CpuSnapshot:
    wall: float
    self_cpu: float
    children_cpu: float
    postgres_cpu: float | None

    @classmethod
    def take(cls) -> CpuSnapshot:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(time.perf_counter(), me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, postgres_cpu_s())

    def since(self, before: CpuSnapshot, children_label: str = "cpu_workerpool_s") -> dict[str, float]:
        """CPU seconds per component between two snapshots (children: processes reaped in between)."""
        out = {
            "wall_s": round(self.wall - before.wall, 3),
            children_label: round(self.children_cpu - before.children_cpu, 2),
            # This pytest process: the in-process emulator's HTTP threads (its main thread only waits).
            "cpu_emulator_s": round(self.self_cpu - before.self_cpu, 2),
        }
        if self.postgres_cpu is not None and before.postgres_cpu is not None:
            out["cpu_postgres_s"] = round(self.postgres_cpu - before.postgres_cpu, 2)
        return out


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a live process, {} if it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    rank = max(1, min(len(data), math.ceil(pct / 100.0 * len(data))))
    return data[rank - 1]
