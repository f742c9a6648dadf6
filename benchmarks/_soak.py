"""The soak run's parts: a steady write workload, a sampler, churn per record, and the plot.

The workload is what an application does all day: single-row UPDATEs of random products (most of
it), single-row INSERTs and DELETEs, and every few seconds a bulk UPDATE of a few hundred rows, at a
fixed rate from one writer thread. The sampler reads every few seconds what an operator would watch:
each hot table's size and live/dead tuples and autovacuum runs, the workers' RSS, and the drain lag
(the age of the oldest change not yet acknowledged, in the queue or the inbox).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._bench import read_status_kb
from workerpool.observability.vacuum import HOT_TABLES


@dataclass
class Writer:
    """Writes `rate` single-row statements a second (plus a bulk UPDATE every `bulk_every_s`) until stopped."""

    url: str
    rate: float
    first_new_id: int
    existing: int
    bulk_rows: int = 300
    bulk_every_s: float = 10.0
    stop: threading.Event = field(default_factory=threading.Event)
    statements: int = 0
    changed_keys: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(17)
        next_id = self.first_new_id
        next_bulk = time.monotonic() + self.bulk_every_s
        interval = 1.0 / self.rate
        try:
            with psycopg.connect(self.url, autocommit=True, application_name="soak-writer") as conn:
                due = time.monotonic()
                while not self.stop.is_set():
                    roll = rng.random()
                    if roll < 0.80:
                        conn.execute(
                            "UPDATE products SET stock = stock + 1, updated_at = now() WHERE id = %s",
                            (rng.randint(1, self.existing),),
                            prepare=True,
                        )
                    elif roll < 0.95:
                        conn.execute(
                            "INSERT INTO products SELECT * FROM products_src WHERE id = %s", (next_id,), prepare=True
                        )
                        next_id += 1
                    else:
                        conn.execute(
                            "DELETE FROM products WHERE id = %s", (rng.randint(1, self.existing),), prepare=True
                        )
                    self.statements += 1
                    self.changed_keys += 1
                    if time.monotonic() >= next_bulk:
                        start = rng.randint(1, max(1, self.existing - self.bulk_rows))
                        conn.execute(
                            "UPDATE products SET price = price + 0.01 WHERE id BETWEEN %s AND %s",
                            (start, start + self.bulk_rows - 1),
                        )
                        self.statements += 1
                        self.changed_keys += self.bulk_rows
                        next_bulk += self.bulk_every_s
                    due += interval
                    delay = due - time.monotonic()
                    if delay > 0:
                        self.stop.wait(delay)
                    elif delay < -1.0:
                        due = time.monotonic()  # fell behind (a slow machine): do not burst to catch up
        except BaseException as exc:  # reported by the test
            self.error = exc


_TABLES = """
SELECT c.relname, pg_total_relation_size(c.oid), s.n_live_tup, s.n_dead_tup, s.autovacuum_count,
       s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del
  FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.oid = ANY(ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) t))"""

_LAG = """
SELECT coalesce(extract(epoch FROM now() - min(since)), 0)::float8, coalesce(sum(n), 0)::bigint
  FROM (SELECT min(created_at) AS since, count(*) AS n FROM algolia_sync_queue WHERE status IN ('pending', 'processing')
        UNION ALL SELECT min(created_at), sum(keys) FROM algolia_sync_inbox) w"""


def counters(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Cumulative row-version counters of the hot tables (pg_stat_user_tables)."""
    return {
        r[0]: {"ins": r[5], "upd": r[6], "hot_upd": r[7], "del": r[8]}
        for r in conn.execute(_TABLES, (list(HOT_TABLES),)).fetchall()
    }


def records_synced(conn: psycopg.Connection) -> int:
    """Records the pool's workers have acknowledged (sent, deleted or skipped), from their heartbeat
    counters: the log is written once per acknowledgement call, so its insert counter counts calls."""
    return int(conn.execute("SELECT coalesce(sum(records), 0) FROM algolia_sync_workers").fetchone()[0])


def sample(conn: psycopg.Connection, t0: float, worker_pids: Callable[[], list[int]]) -> dict[str, Any]:
    """One sample: seconds since t0, per-table size/live/dead/autovacuum runs, workers' RSS, drain lag."""
    rows = conn.execute(_TABLES, (list(HOT_TABLES),)).fetchall()
    lag_s, backlog = conn.execute(_LAG).fetchone()
    rss = [read_status_kb(pid).get("VmRSS", 0) for pid in worker_pids()]
    return {
        "t": round(time.monotonic() - t0, 1),
        "tables": {r[0]: {"size_bytes": r[1], "live": r[2], "dead": r[3], "autovacuums": r[4]} for r in rows},
        "worker_rss_kb": rss,
        "lag_s": round(lag_s, 2),
        "backlog": int(backlog),
    }


def churn(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], records: int) -> dict[str, Any]:
    """Row versions written per synced record, by table: every UPDATE and DELETE leaves one dead version
    (a HOT update's is pruned on its page without vacuum; the others wait for vacuum)."""
    out: dict[str, Any] = {}
    total_dead = total_needing_vacuum = 0
    for table in HOT_TABLES:
        d = {k: after[table][k] - before[table][k] for k in ("ins", "upd", "hot_upd", "del")}
        dead = d["upd"] + d["del"]
        needs_vacuum = dead - d["hot_upd"]
        total_dead += dead
        total_needing_vacuum += needs_vacuum
        out[table] = {
            **d,
            "dead_per_record": round(dead / records, 3) if records else None,
            "dead_needing_vacuum_per_record": round(needs_vacuum / records, 3) if records else None,
        }
    out["total"] = {
        "records": records,
        "dead_per_record": round(total_dead / records, 3) if records else None,
        "dead_needing_vacuum_per_record": round(total_needing_vacuum / records, 3) if records else None,
    }
    return out


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    """Four panels over time: table sizes, dead tuples, workers' RSS, drain lag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    (size_ax, dead_ax), (rss_ax, lag_ax) = axes
    for table in HOT_TABLES:
        label = table.replace("algolia_sync_", "")
        size_ax.plot(t, [s["tables"].get(table, {}).get("size_bytes", 0) / 2**20 for s in samples], label=label)
        dead_ax.plot(t, [s["tables"].get(table, {}).get("dead", 0) for s in samples], label=label)
    size_ax.set_title("table size with indexes (MB)")
    dead_ax.set_title("dead tuples (pg_stat_user_tables)")
    workers = max((len(s["worker_rss_kb"]) for s in samples), default=0)
    for i in range(workers):
        rss_ax.plot(
            t,
            [s["worker_rss_kb"][i] / 1024 if i < len(s["worker_rss_kb"]) else None for s in samples],
            label=f"worker {i + 1}",
        )
    rss_ax.set_title("worker RSS (MB)")
    rss_ax.set_ylim(bottom=0)
    lag_ax.plot(t, [s["lag_s"] for s in samples], color="tab:red")
    lag_ax.set_title("drain lag: oldest unacknowledged change (s)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlabel("minutes")
    size_ax.legend(fontsize=8)
    dead_ax.legend(fontsize=8)
    if workers:
        rss_ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
