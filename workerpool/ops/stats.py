"""`workerpool stats`: what the queue holds, how fast it moves, and who is working on it.

Names come from the database (tables, indices, hosts) and may hold control characters: the text
form shows them escaped (`\\x1b`), the JSON form as `\\u` escapes, so nothing reaches a terminal raw.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from workerpool.db.queries import Q
from workerpool.observability import vacuum
from workerpool.observability.dashboard.overview import LAG_SAMPLE, lag_figures


def collect(conn: psycopg.Connection, thresholds: vacuum.Thresholds | None = None) -> dict[str, Any]:
    """Per table/index counts, ages and rates, live workers (heartbeat in the last 30 s) with the
    batches and records each has settled up to its last acknowledgement, and the hot tables' vacuum
    health with its warnings (`vacuum.collect`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        tables = cur.execute(Q.stats_tables).fetchall()
        # A worker writes its counts with its heartbeat (every few seconds, and only between batches or
        # polls), so the heartbeat alone lags: a burst synced since then would show as 0. What it
        # acknowledged after its heartbeat is read from the log (its rows there carry its id), so the
        # counts are those of the last acknowledgement. The log's synced_at index bounds the scan to
        # the rows written since the oldest live heartbeat.
        workers = cur.execute(Q.stats_workers).fetchall()
    freshness = [
        {"table": name, "ack": lag_figures(*row[:4]), "searchable": lag_figures(*row[4:]) if row[4] else None}
        for name, *row in conn.execute(Q.overview_lag, (LAG_SAMPLE,))
    ]
    health = vacuum.collect(conn, thresholds)
    return {
        "tables": tables,
        "workers": workers,
        "freshness": freshness,
        "vacuum": health.to_dict(),
        "warnings": health.warnings,
    }


def render(data: dict[str, Any]) -> str:
    """A plain-text table for a terminal."""
    columns = [
        "table_name",
        "index_name",
        "pending",
        "processing",
        "failed",
        "completed_last_hour",
        "oldest_pending_age_s",
        "records_per_s_last_minute",
        "success_rate_pct",
    ]
    headers = ["table", "index", "pending", "processing", "failed", "done/1h", "oldest(s)", "rec/s(1m)", "ok%"]
    rows = [[_fmt(t.get(c)) for c in columns] for t in data["tables"]]
    out = [_table(headers, rows) if rows else "no watched tables\n"]
    if data.get("freshness"):
        out.append("\nfreshness, last 5 minutes: change -> acknowledged, change -> searchable (s)\n")
        out.append(
            _table(
                ["table", "ack p50", "ack p95", "ack max", "searchable p50", "p95", "max", "followed"],
                [[f["table"], *_lag_cells(f["ack"]), *_lag_cells(f["searchable"], True)] for f in data["freshness"]],
            )
        )
    live = data["workers"]
    out.append(f"\n{len(live)} live worker(s)\n")
    if live:
        out.append(
            _table(
                ["worker", "host", "pid", "batches", "records", "heartbeat(s)"],
                [
                    [_fmt(w[k]) for k in ("worker_id", "host", "pid", "batches", "records", "heartbeat_age_s")]
                    for w in live
                ],
            )
        )
    if "vacuum" in data:
        out.append("\n" + _render_vacuum(data["vacuum"]))
    return "".join(out)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNESCAPED_BY_JSON = re.compile(r"[\x7f-\x9f]")  # JSON requires escapes for C0 only


def printable(text: str) -> str:
    """`text` with every C0/C1 control character (and DEL) shown as a `\\xNN` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def json_text(data: Any, indent: bool = False) -> str:
    """JSON whose strings carry no raw control character: orjson escapes C0; DEL and C1 are escaped here."""
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    return _UNESCAPED_BY_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _render_vacuum(v: dict[str, Any]) -> str:
    headers = ["table", "size", "live", "dead", "last vacuum", "last autovacuum"]
    rows = [
        [
            t["table"],
            _bytes(t["size_bytes"]),
            str(t["live_tuples"]),
            str(t["dead_tuples"]),
            (t["last_vacuum"] or "never")[:19],
            (t["last_autovacuum"] or "never")[:19],
        ]
        for t in v["tables"]
    ]
    out = [f"vacuum (autovacuum {'on' if v['autovacuum'] else 'OFF on this server'})\n", _table(headers, rows)]
    horizon = v["horizon"]
    out.append(f"xmin horizon: {'held by the ' + _holder(horizon) if horizon else 'nothing holds it back'}\n")
    out += [f"  also: {_holder(h)} (holds system catalogs only)\n" for h in v["holders"] if not h["blocks_hot_tables"]]
    out += [f"WARNING: {w}\n" for w in v["warnings"]]
    return "".join(out)


def _lag_cells(figures: dict[str, Any] | None, samples: bool = False) -> list[str]:
    """p50, p95, max (and the samples' count), or dashes where there were none."""
    keys = ("p50_s", "p95_s", "max_s", "samples") if samples else ("p50_s", "p95_s", "max_s")
    if figures is None:
        return ["-"] * (len(keys) - 1) + (["0"] if samples else ["-"])
    return [_fmt(figures[k]) for k in keys]


def _holder(h: dict[str, Any]) -> str:
    return vacuum.HorizonHolder(**h).describe()


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
    return printable(str(value))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"

    return line(headers) + line(["-" * w for w in widths]) + "".join(line(r) for r in rows)
