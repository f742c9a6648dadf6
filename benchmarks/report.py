"""Summarize a benchmark run: a short table with the ratios against the targets, and a plot.

    python benchmarks/report.py [RESULTS.json ...] [--plot benchmarks/drain.png] [--markdown]

RESULTS.json is what `pytest benchmarks/ --benchmark-json=RESULTS.json` wrote (default:
benchmarks/results/latest.json). The plot shows drain records/s against BATCH_SIZE, one line per
WORKERS setting, with the claim/ack ceiling and PgQueuer for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
DEFAULT_PLOT = HERE / "drain.png"

REF_BATCH, REF_WORKERS, REF_POOL = 1000, 2, 2
MEMORY_FLAT_KB = 10 * 1024  # a worker's RSS may grow this much after the first 10% of a drain


def _by_test(benchmarks: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for b in benchmarks:
        out.setdefault(b["name"].split("[")[0], []).append(b)
    return out


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: Iterable[list[Any]], markdown: bool) -> str:
    rows = [[str(c) for c in r] for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def just(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    line = just(headers)
    out = [line, "-" * len(line)]
    out += [just(r) for r in rows]
    return "\n".join(out)


def summarize(data: dict, markdown: bool = False) -> tuple[str, dict]:
    tests = _by_test(data.get("benchmarks", []))
    info = lambda b: b.get("extra_info", {})  # noqa: E731
    parts: list[str] = []
    figures: dict[str, Any] = {}
    h = (lambda t: f"### {t}") if markdown else (lambda t: f"\n== {t} ==")

    ceiling_rounds = _rounds(info(b) for b in tests.get("test_claim_ack_ceiling", []))
    peer_rounds = _rounds(info(b) for b in tests.get("test_pgqueuer_noop_drain", []))
    drain_rounds = _rounds(info(b) for b in tests.get("test_drain", []))
    ceiling = {k[:2]: _median_point(v) for k, v in ceiling_rounds.items()}
    peer = {k[:2]: _median_point(v) for k, v in peer_rounds.items()}
    drains = sorted(
        (_median_point(v) for v in drain_rounds.values()),
        key=lambda d: (d["pool_size"] != REF_POOL, d["pool_size"], d["workers"], d["batch_size"]),
    )
    figures.update(
        ceiling=ceiling,
        peer=peer,
        drains=drains,
        paired=_paired_ratios(
            drain_rounds.get((REF_BATCH, REF_WORKERS, REF_POOL), []), peer_rounds.get((REF_BATCH, REF_WORKERS), [])
        ),
    )

    if drains:
        rows = []
        for d in drains:
            c = ceiling.get((d["batch_size"], d["workers"]))
            p = peer.get((d["batch_size"], d["workers"]))
            rows.append(
                [
                    d["batch_size"],
                    d["workers"],
                    d["pool_size"],
                    _fmt(d["rows"]),
                    _fmt(d["seconds"], 1),
                    _fmt(d["records_per_s"]),
                    _fmt(d.get("records_per_s_in_workers")),
                    _fmt(c["records_per_s"]) if c else "-",
                    f"{100 * _like_for_like(d) / c['records_per_s']:.0f}%" if c else "-",
                    _peer_ratio(d, p),
                    f"{_fmt(d.get('cpu_workerpool_s'), 1)} / {_fmt(d.get('cpu_postgres_s'), 1)}"
                    f" / {_fmt(d.get('cpu_emulator_s'), 1)}",
                ]
            )
        parts.append(h("Drain (workerpool run --drain, end to end)"))
        parts.append(
            _table(
                [
                    "BATCH",
                    "WORKERS",
                    "POOL",
                    "rows",
                    "s",
                    "records/s",
                    "in workers/s",
                    "ceiling/s",
                    "of ceiling",
                    "vs PgQueuer",
                    "CPU s: workers / pg / emulator",
                ],
                rows,
                markdown,
            )
        )
        parts.append(
            "`records/s` counts the whole command (start-up and exit included); `in workers/s` the span "
            "from the first worker start to the last worker stop, from the JSON logs. The ceiling and "
            "PgQueuer processes are timed from a common start signal given once they are connected, so "
            "`of ceiling` and `vs PgQueuer` compare them with `in workers/s` (start-up excluded on both "
            "sides); the whole-command ratio follows in parentheses."
        )

    if ceiling:
        parts.append(h("Claim/ack ceiling (same SQL, no Algolia step, no row reading)"))
        parts.append(
            _table(
                ["BATCH", "WORKERS", "rows", "s", "records/s"],
                [
                    [b, w, _fmt(c["rows"]), _fmt(c["seconds"], 2), _fmt(c["records_per_s"])]
                    for (b, w), c in sorted(ceiling.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                ],
                markdown,
            )
        )

    if peer:
        parts.append(h("Peer: PgQueuer draining no-op jobs (same DB server, batch size and process count)"))
        parts.append(
            _table(
                ["BATCH", "WORKERS", "jobs", "s", "jobs/s"],
                [
                    [b, w, _fmt(p["rows"]), _fmt(p["seconds"], 2), _fmt(p["records_per_s"])]
                    for (b, w), p in sorted(peer.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                ],
                markdown,
            )
        )

    capture = {
        b["name"]: info(b)
        for b in tests.get("test_capture_bulk_insert", []) + tests.get("test_capture_single_row_transactions", [])
    }
    if capture:
        rows = []
        for name, c in capture.items():
            kind = "bulk INSERT ... SELECT" if "bulk" in name else "single-row autocommit INSERTs"
            spill = _fmt(c["spill_s"], 3) if "spill_s" in c else "-"
            rows.append(
                [
                    kind,
                    _fmt(c["rows"]),
                    _fmt(c["unwatched_s"], 3),
                    _fmt(c["watched_s"], 3),
                    f"{c['ratio']:.2f}x",
                    f"<= {c['target_ratio']}x",
                    spill,
                ]
            )
            figures["capture_bulk" if "bulk" in name else "capture_single"] = c
        parts.append(h("Capture overhead (watched table / unwatched copy)"))
        # "later, in a worker": moving a bulk statement's inbox keys into the queue, outside the writer's transaction.
        parts.append(
            _table(
                ["statement", "rows", "unwatched s", "watched s", "ratio", "target", "later, in a worker s"],
                rows,
                markdown,
            )
        )

    latency = [info(b) for b in tests.get("test_idle_latency", [])]
    if latency:
        figures["latency"] = latency
        parts.append(h("Idle latency (commit -> record in the emulator, POLLING_INTERVAL 5000)"))
        parts.append(
            _table(
                ["WORKERS", "changes", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                [
                    [
                        x["workers"],
                        x["changes"],
                        _fmt(x["p50_ms"], 1),
                        _fmt(x["p95_ms"], 1),
                        _fmt(x["p99_ms"], 1),
                        _fmt(x["max_ms"], 1),
                    ]
                    for x in latency
                ],
                markdown,
            )
        )

    ser = {b["name"].split("[")[1].rstrip("]"): info(b) for b in tests.get("test_serialization", [])}
    if ser:
        figures["serialization"] = ser
        rows = [
            [k, _fmt(v["us_per_record"], 2), _fmt(v["records_per_s"]), _fmt(v["bytes_per_record"], 0)]
            for k, v in ser.items()
        ]
        parts.append(h("Serialization (1,000 product records, median of the rounds)"))
        parts.append(_table(["path", "us/record", "records/s", "bytes/record"], rows, markdown))
        if {"workerpool-orjson", "algoliasearch-json"} <= ser.keys():
            speedup = ser["algoliasearch-json"]["us_per_record"] / ser["workerpool-orjson"]["us_per_record"]
            figures["serialization_speedup"] = speedup
            parts.append(f"orjson path is {speedup:.1f}x faster per record than the client's json path.")

    memory = [info(b) for b in tests.get("test_memory_flat_over_long_drain", [])]
    if memory:
        m = memory[0]
        figures["memory"] = m
        parts.append(
            h(
                f"Memory over a {m['rows']:,}-record drain (BATCH {m['batch_size']}, WORKERS {m['workers']}, "
                f"{_fmt(m['records_per_s'])} records/s)"
            )
        )
        parts.append(
            _table(
                [
                    "worker pid",
                    "samples",
                    "RSS first MB",
                    "RSS at 10% MB",
                    "RSS end MB",
                    "peak (VmHWM) MB",
                    "growth after 10%",
                ],
                [
                    [
                        r["pid"],
                        r["samples"],
                        _fmt(r["rss_first_kb"] / 1024, 1),
                        _fmt(r["rss_at_10pct_kb"] / 1024, 1),
                        _fmt(r["rss_end_kb"] / 1024, 1),
                        _fmt(r["peak_hwm_kb"] / 1024, 1),
                        f"{r['growth_after_10pct_kb'] / 1024:+.1f} MB",
                    ]
                    for r in m.get("rss", [])
                ],
                markdown,
            )
        )

    verify = sorted((info(b) for b in tests.get("test_verify_and_atomic_reindex_memory", [])), key=lambda v: v["rows"])
    if verify:
        figures["verify"] = verify
        parts.append(h("verify and reindex --atomic (CLI subprocesses; peak RSS of the command's own process)"))
        parts.append(
            _table(
                ["command", "rows", "wall s", "rows/s", "peak RSS MB", "CPU s: command / pg / emulator"],
                [
                    [
                        name,
                        _fmt(v["rows"]),
                        _fmt(v[key]["wall_s"], 1),
                        _fmt(v[key]["rows_per_s"]),
                        _fmt(v[key]["peak_rss_mb"], 1),
                        f"{_fmt(v[key]['cpu_cli_s'], 1)} / {_fmt(v[key].get('cpu_postgres_s'), 1)} / "
                        f"{_fmt(v[key]['cpu_emulator_s'], 1)}",
                    ]
                    for key, name in (("reindex", "reindex --atomic"), ("verify", "verify"))
                    for v in verify
                ],
                markdown,
            )
        )

    profiles = [info(b) for b in tests.get("test_profile_drain", [])]
    for p in profiles:
        prof = p["profile"]
        for role in ("main", "sender"):
            if role not in prof:
                continue
            title = "main thread: claim, read, build, ack" if role == "main" else "sender thread: HTTP"
            parts.append(
                h(
                    f"Worker time (py-spy, wall clock incl. waits), BATCH {p['batch_size']}, "
                    f"WORKERS {p['workers']}, {title}, {prof[role]['samples']} samples"
                )
            )
            parts.append(
                _table(["where", "share"], [[k, f"{v:.1f}%"] for k, v in prof[role]["percent"].items()], markdown)
            )

    targets = evaluate_targets(figures)
    if targets:
        parts.append(h("Targets"))
        parts.append(_table(["target", "measured", "verdict"], targets, markdown))
    return "\n".join(parts).lstrip("\n"), figures


_MEDIAN_FIELDS = (
    "seconds",
    "records_per_s",
    "records_per_s_in_workers",
    "cpu_workerpool_s",
    "cpu_postgres_s",
    "cpu_emulator_s",
)


def _rounds(infos: Iterable[dict]) -> dict[tuple, list[dict]]:
    """Results by point (batch, workers[, pool]): several when the point was repeated
    (WORKERPOOL_BENCH_REPEAT)."""
    out: dict[tuple, list[dict]] = {}
    for i in infos:
        key = (i["batch_size"], i["workers"]) + ((i["pool_size"],) if "pool_size" in i else ())
        out.setdefault(key, []).append(i)
    return out


def _median_point(results: list[dict]) -> dict:
    """One figure per point: the median of its rounds for the rates, times and CPU seconds."""
    merged = dict(results[-1])
    for field in _MEDIAN_FIELDS:
        values = [r[field] for r in results if r.get(field) is not None]
        if values:
            merged[field] = statistics.median(values)
    merged["rounds"] = len(results)
    return merged


def _paired_ratios(drains: list[dict], peers: list[dict]) -> list[float]:
    """Drain / PgQueuer ratio of each round in which both ran (they ran minutes apart at most)."""
    by_round = {p.get("round", 1): p for p in peers}
    return [
        _like_for_like(d) / by_round[d.get("round", 1)]["records_per_s"]
        for d in drains
        if d.get("round", 1) in by_round
    ]


def _like_for_like(d: dict) -> float:
    """The drain rate comparable with the ceiling and PgQueuer figures, which exclude process start-up."""
    return d.get("records_per_s_in_workers") or d["records_per_s"]


def _peer_ratio(d: dict, p: dict | None) -> str:
    if not p:
        return "-"
    return f"{_like_for_like(d) / p['records_per_s']:.2f}x ({d['records_per_s'] / p['records_per_s']:.2f}x)"


def evaluate_targets(f: dict) -> list[list[str]]:
    out = []
    ref = next(
        (
            d
            for d in f.get("drains", [])
            if (d["batch_size"], d["workers"], d["pool_size"]) == (REF_BATCH, REF_WORKERS, REF_POOL)
        ),
        None,
    )
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    if ref:
        p = f["peer"].get((REF_BATCH, REF_WORKERS))
        rate = _like_for_like(ref)
        if p:
            r = rate / p["records_per_s"]
            whole = ref["records_per_s"] / p["records_per_s"]
            paired = f.get("paired") or []
            if len(paired) > 1:  # repeated rounds: the median of the per-round ratios is the figure
                r = statistics.median(paired)
                detail = f"; per round {', '.join(f'{x:.2f}x' for x in paired)}, median {r:.2f}x"
            else:
                detail = ""
            out.append(
                [
                    f"drain at BATCH {REF_BATCH}, {REF_WORKERS} workers >= 2x PgQueuer no-op",
                    f"{_fmt(rate)} vs {_fmt(p['records_per_s'])} jobs/s = {rate / p['records_per_s']:.2f}x "
                    f"(whole command {_fmt(ref['records_per_s'])}/s = {whole:.2f}x){detail}",
                    verdict(r >= 2),
                ]
            )
        c = f["ceiling"].get((REF_BATCH, REF_WORKERS))
        if c:
            r = rate / c["records_per_s"]
            out.append(
                [
                    f"drain at BATCH {REF_BATCH}, {REF_WORKERS} workers >= 25% of claim/ack ceiling",
                    f"{_fmt(rate)} vs {_fmt(c['records_per_s'])} = {100 * r:.0f}%",
                    verdict(r >= 0.25),
                ]
            )
    if "capture_bulk" in f:
        r = f["capture_bulk"]["ratio"]
        out.append(["bulk capture <= 3x", f"{r:.2f}x", verdict(r <= 3)])
    if "capture_single" in f:
        r = f["capture_single"]["ratio"]
        out.append(["single-row capture <= 1.3x", f"{r:.2f}x", verdict(r <= 1.3)])
    if f.get("latency"):
        p50 = f["latency"][0]["p50_ms"]
        out.append(
            ["idle latency p50 < 50 ms", f"{p50:.1f} ms (p95 {f['latency'][0]['p95_ms']:.1f} ms)", verdict(p50 < 50)]
        )
    if f.get("memory", {}).get("rss"):
        worst = max(r["growth_after_10pct_kb"] for r in f["memory"]["rss"])
        peak = max(r["peak_hwm_kb"] for r in f["memory"]["rss"])
        out.append(
            [
                f"worker RSS flat over {f['memory']['rows']:,} records"
                f" (growth after 10% <= {MEMORY_FLAT_KB // 1024} MB)",
                f"worst growth {worst / 1024:+.1f} MB, peak {peak / 1024:.0f} MB",
                verdict(worst <= MEMORY_FLAT_KB),
            ]
        )
    verify = {v["rows"]: v for v in f.get("verify", [])}
    if 1_000_000 in verify:
        big = verify[1_000_000]
        for key, name in (("verify", "verify"), ("reindex", "reindex --atomic")):
            peak = big[key]["peak_rss_mb"]
            out.append([f"{name} peak RSS at 1,000,000 rows < 200 MB", f"{peak:.1f} MB", verdict(peak < 200)])
            if 100_000 in verify:
                ratio = peak / verify[100_000][key]["peak_rss_mb"]
                out.append(
                    [f"{name} peak RSS at 1,000,000 within 1.2x of 100,000", f"{ratio:.2f}x", verdict(ratio <= 1.2)]
                )
        rate = big["verify"]["rows_per_s"]
        out.append(["verify >= 20,000 rows/s at 1,000,000 rows", f"{_fmt(rate)} rows/s", verdict(rate >= 20_000)])
    return out


def plot(figures: dict, path: Path, meta: dict) -> Path | None:
    drains = [d for d in figures.get("drains", []) if d["pool_size"] == REF_POOL]
    if not drains:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    workers = sorted({d["workers"] for d in drains})
    colors = dict(zip(workers, ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"], strict=False))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for w in workers:
        pts = sorted((d["batch_size"], _like_for_like(d)) for d in drains if d["workers"] == w)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "o-",
            color=colors[w],
            lw=2.2,
            ms=6,
            label=f"workerpool, WORKERS={w}",
        )
        ceil = sorted((b, c["records_per_s"]) for (b, ww), c in figures["ceiling"].items() if ww == w)
        if ceil:
            ax.plot(
                [p[0] for p in ceil],
                [p[1] for p in ceil],
                "--",
                color=colors[w],
                lw=1.2,
                alpha=0.75,
                label=f"claim/ack ceiling, {w} process{'es' if w > 1 else ''}",
            )
        peer = sorted((b, p["records_per_s"]) for (b, ww), p in figures["peer"].items() if ww == w)
        if peer:
            ax.plot(
                [p[0] for p in peer],
                [p[1] for p in peer],
                "X",
                color=colors[w],
                ms=11,
                mec="black",
                mew=0.8,
                label=f"PgQueuer no-op, {w} process{'es' if w > 1 else ''}",
            )
        share = [(b, r / c["records_per_s"] * 100) for b, r in pts if (c := figures["ceiling"].get((b, w)))]
        if share:
            ax2.plot([p[0] for p in share], [p[1] for p in share], "o-", color=colors[w], lw=2, label=f"WORKERS={w}")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(sorted({d["batch_size"] for d in drains}))
        a.get_xaxis().set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
        a.minorticks_off()
        a.grid(True, which="major", alpha=0.3)
        a.set_xlabel("BATCH_SIZE (rows claimed per batch)")
    ax.set_yscale("log")
    ax.get_yaxis().set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel("records / s in the workers, start-up excluded (log scale)")
    rows = max(d["rows"] for d in drains)
    fewer = sorted({(d["rows"], d["batch_size"]) for d in drains if d["rows"] < rows})
    note = "".join(f"; {r:,} at BATCH_SIZE {b}" for r, b in {b: (r, b) for r, b in fewer}.values())
    ax.set_title(f"Drain throughput, POOL_SIZE={REF_POOL} ({rows:,} queued changes{note})", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(workers), fontsize=8, frameon=False)
    ax2.axhline(25, color="grey", ls=":", lw=1)
    ax2.text(min(d["batch_size"] for d in drains), 26.5, "target: 25%", fontsize=8, color="grey")
    ax2.set_ylabel("% of the claim/ack ceiling")
    ax2.set_ylim(0, max(100, ax2.get_ylim()[1]))
    ax2.set_title("Share of the database's own ceiling")
    ax2.legend(fontsize=8)
    machine = meta.get("machine_info", {})
    fig.suptitle(
        f"workerpool benchmarks, {machine.get('cpu', {}).get('count', '?')} cores, "
        f"Python {machine.get('python_version', '?')}, {meta.get('datetime', '')[:16]}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        nargs="*",
        default=[str(DEFAULT_JSON)],
        help="pytest-benchmark JSON file(s); a benchmark in a later file replaces the same one in an earlier file",
    )
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write ('' for none)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    data: dict = {}
    merged: dict[str, dict] = {}
    for name in args.results:
        try:
            one = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            print(f"report: cannot read {name}: {exc}", file=sys.stderr)
            return 2
        data = data or one
        for b in one.get("benchmarks", []):
            merged[b["fullname"]] = b
    data = {**data, "benchmarks": list(merged.values())}
    text, figures = summarize(data, markdown=args.markdown)
    print(text)
    if args.plot:
        written = plot(figures, Path(args.plot), data)
        if written:
            print(f"\nplot written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
