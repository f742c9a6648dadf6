"""The dashboard's picture of the queue: one short, read-only query set per refresh.

Everything is read in one REPEATABLE READ transaction, so the numbers agree with each other. Each
query is bounded however large the tables grow, except the queue count, which `/metrics` and
`/healthz` pay as well:

- depth and oldest wait by table and status: one pass over the queue and the inbox;
- records per minute over the last hour: each refresh counts the log of the previous and the current
  minute (through the index on `synced_at`) plus, until the hour is complete, ten more minutes of the
  past; counted minutes cannot change any more and are kept in memory (`MinuteSeries`);
- change-to-ack lag: the latest `LAG_SAMPLE` successful acknowledgements of the last five minutes;
- failed rows: the first `FAILED_ROWS` of each table in key order (the index on failed keys), next to
  the table's total;
- live workers (heartbeat in the last `LIVE_WORKER_S` seconds, as `stats` counts them) and reindex
  progress rows, with whether the reindex still holds its lock (running) or was interrupted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import psycopg

from workerpool.db.connection import one_row
from workerpool.db.queries import Q

MINUTES = 60
BACKFILL_MINUTES = 10
LAG_SAMPLE = 1000
FAILED_ROWS = 20
LIVE_WORKER_S = 30
STATUSES = ("pending", "processing", "failed", "inbox")


@dataclass
class MinuteSeries:
    """Per table and minute: records synced and failed, from `algolia_sync_log`, counted incrementally.

    A refresh counts the log from `final_before` on (the previous and the current minute) and, until
    the whole hour is known, `BACKFILL_MINUTES` more of the past: however busy the log, no refresh
    counts more than about twelve minutes of it, and the chart fills its hour within a few refreshes."""

    counts: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    first_counted: int | None = None  # the earliest minute (epoch seconds) counted so far
    final_before: int | None = None  # minutes before this one are counted for good

    def ranges(self, now_minute: int) -> list[tuple[int, float]]:
        """The [start, end) spans of the log (epoch seconds) this refresh counts, the recent one first."""
        window_start = now_minute - (MINUTES - 1) * 60
        if self.final_before is None or self.first_counted is None or self.final_before < window_start:
            return [(max(window_start, now_minute - (BACKFILL_MINUTES - 1) * 60), math.inf)]
        out: list[tuple[int, float]] = [(self.final_before, math.inf)]
        if self.first_counted > window_start:
            out.append((max(window_start, self.first_counted - BACKFILL_MINUTES * 60), self.first_counted))
        return out

    def update(self, ranges: list[tuple[int, float]], now_minute: int, rows: list[tuple[str, int, int, int]]) -> None:
        """Take the counts of `ranges`; forget minutes older than the window.

        The previous minute is counted again next time: an acknowledgement stamped just before the
        minute turned may commit just after this refresh read."""
        window_start = now_minute - (MINUTES - 1) * 60
        recent = ranges[0][0]
        first_counted = self.first_counted
        if self.final_before is None or first_counted is None or recent != self.final_before:  # a fresh start
            self.counts, first_counted = {}, recent
        self.counts = {k: v for k, v in self.counts.items() if window_start <= k[1] < recent}
        for table, minute, synced, failed in rows:
            self.counts[(table, int(minute))] = [int(synced), int(failed)]
        self.first_counted = max(window_start, min(start for start, _ in [*ranges, (first_counted, 0)]))
        self.final_before = now_minute - 60

    def counted_from(self, now_minute: int) -> int:
        """The first minute of the chart whose count is known (later minutes are known too)."""
        return max(
            now_minute - (MINUTES - 1) * 60, self.first_counted if self.first_counted is not None else now_minute
        )

    def series(self, table: str, now_minute: int) -> list[dict[str, int]]:
        """The last hour of one table, oldest minute first, the current (partial) minute last."""
        out = []
        for i in range(MINUTES - 1, -1, -1):
            minute = now_minute - i * 60
            synced, failed = self.counts.get((table, minute), (0, 0))
            out.append({"t": minute, "synced": synced, "failed": failed})
        return out


def collect(conn: psycopg.Connection, series: MinuteSeries, index_prefix: str = "") -> dict[str, Any]:
    """The overview document the dashboard page renders (see the module docstring for the costs), read
    in one snapshot: the caller's transaction's, or one of its own."""
    inside = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if not inside:
            conn.execute(Q.overview_snapshot)
        now, now_minute = one_row(conn.execute(Q.overview_clock))
        config = conn.execute(Q.overview_registrations).fetchall()
        depth = conn.execute(Q.overview_queue).fetchall()
        ranges = series.ranges(now_minute)
        minutes = []
        for first, end in ranges:
            minutes += conn.execute(
                Q.overview_minutes,
                (first, end),
            ).fetchall()
        lag = conn.execute(
            Q.overview_lag,
            (LAG_SAMPLE,),
        ).fetchall()
        failing = sorted({t for t, status, n, _ in depth if status == "failed" and n})
        failed_rows = conn.execute(
            Q.overview_failed,
            (failing, FAILED_ROWS),
        ).fetchall()
        workers = conn.execute(
            Q.overview_workers,
            (LIVE_WORKER_S,),
        ).fetchall()
        reindex = conn.execute(Q.overview_reindex).fetchall()
    series.update(ranges, now_minute, minutes)
    return _shape(now, now_minute, index_prefix, config, depth, series, lag, failed_rows, workers, reindex)


def lag_figures(samples: int, p50: float, p95: float, worst: float) -> dict[str, Any]:
    """One lag's figures as the overview and `stats --json` give them."""
    return {"samples": samples, "p50_s": round(p50, 3), "p95_s": round(p95, 3), "max_s": round(worst, 3)}


def _shape(
    now: float,
    now_minute: int,
    prefix: str,
    config: list[tuple[Any, ...]],
    depth: list[tuple[Any, ...]],
    series: MinuteSeries,
    lag: list[tuple[Any, ...]],
    failed_rows: list[tuple[Any, ...]],
    workers: list[tuple[Any, ...]],
    reindex: list[tuple[Any, ...]],
) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {}

    def table(name: str, index: str | None = None, enabled: bool = True) -> dict[str, Any]:
        if name not in tables:
            tables[name] = {
                "table": name,
                "index": prefix + index if index else None,
                "enabled": enabled,
                "watched": index is not None,
                "depth": dict.fromkeys(STATUSES, 0),
                "oldest_waiting_s": None,
                "lag": None,
                "searchable": None,
                "failed_rows": [],
                "reindex": None,
            }
        return tables[name]

    for name, index, enabled in config:
        table(name, index, enabled)
    for name, status, count, age in depth:
        t = table(name)
        t["depth"][status] = int(count or 0)
        if status in ("pending", "inbox") and age is not None:
            t["oldest_waiting_s"] = round(max(age, t["oldest_waiting_s"] or 0.0), 3)
    for name, samples, p50, p95, worst, *searchable in lag:
        table(name)["lag"] = lag_figures(samples, p50, p95, worst)
        table(name)["searchable"] = lag_figures(*searchable) if searchable[0] else None
    for name, row_id, record_id, operation, attempts, last_error, updated in failed_rows:
        table(name)["failed_rows"].append(
            {
                "id": row_id,
                "record_id": record_id,
                "operation": operation,
                "attempts": attempts,
                "last_error": last_error,
                "failed_at": updated,
            }
        )
    for name, mode, tmp_index, started, idle_s, done, total, running in reindex:
        table(name)["reindex"] = {
            "mode": mode,
            "tmp_index": tmp_index,
            "started_at": started,
            "last_progress_s": round(idle_s, 1),
            "rows_done": done,
            "rows_total": total,
            "running": running,
        }
    for t in tables.values():
        t["per_minute"] = series.series(t["table"], now_minute)
    return {
        "now": now,
        "indices": list(tables.values()),
        "workers": [
            {
                "worker_id": w,
                "host": h,
                "pid": pid,
                "started_at": started,
                "heartbeat_age_s": round(age, 1),
                "batches": batches,
                "records": records,
            }
            for w, h, pid, started, age, batches, records in workers
        ],
        "live_worker_s": LIVE_WORKER_S,
        "chart_counted_from": series.counted_from(now_minute),
    }
