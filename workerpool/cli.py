"""`workerpool` command line (also `python -m workerpool`).

Flags override the environment, which overrides `.env`. Bad input exits 2 with one line on stderr
naming the bad value and what is allowed; secrets never appear in that line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

import orjson

from . import config, logs
from .capture import WatchError
from .config import EXIT_CONFIG_ERROR, ConfigError, Settings
from .db import DatabaseUnavailable, connect

log = logging.getLogger("workerpool.cli")

# Flags shared by every command that runs workers: flag -> Settings field.
RUN_FLAGS = {
    "--workers": "workers",
    "--batch-size": "batch_size",
    "--pool-size": "pool_size",
    "--polling-interval": "polling_interval",
    "--max-retries": "max_retries",
    "--lease-timeout": "lease_timeout",
    "--shutdown-timeout": "shutdown_timeout",
    "--health-port": "health_port",
    "--log-level": "log_level",
    "--index-prefix": "algolia_index_prefix",
}


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {field: getattr(args, field, None) for field in RUN_FLAGS.values()}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    settings = config.load(overrides)
    logs.setup(settings.log_level, settings.secrets())
    return settings


def _db(settings: Settings, purpose: str = "cli"):
    settings.require_database()
    return connect(settings.database_url, purpose=purpose, timeout=5)


def cmd_migrate(args: argparse.Namespace) -> int:
    from .migrate import migrate

    settings = _settings(args)
    with _db(settings, "migrate") as conn:
        applied = migrate(conn)
    print(f"schema up to date ({len(applied)} migration(s) applied)")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from .capture import Related, unindexed_related, watch

    settings = _settings(args)
    attributes = [a.strip() for a in args.attributes.split(",")] if args.attributes is not None else None
    related = [Related.parse(spec) for spec in args.related or ()]
    with _db(settings) as conn:
        watched = watch(conn, args.table, args.index, key=args.key, source=args.source,
                        attributes=attributes, transform=args.transform, related=related)
        warnings = unindexed_related(conn, watched.table_name)
    source = f" from {watched.source_view}" if watched.source_view else ""
    print(f"watching {watched.table_name} (key {watched.key_column}){source} -> index {settings.algolia_index_prefix}{watched.index_name}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_unwatch(args: argparse.Namespace) -> int:
    from .capture import unwatch

    settings = _settings(args)
    with _db(settings) as conn:
        name = unwatch(conn, args.table)
    print(f"no longer watching {name} (its index was left as it is)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .db import require
    from .supervisor import Supervisor

    settings = _settings(args)
    settings.require_database()
    settings.require_algolia()
    require(settings.database_url)
    with connect(settings.database_url, purpose="check", timeout=5) as conn:
        if not conn.execute("SELECT to_regproc('get_pending_algolia_syncs') IS NOT NULL").fetchone()[0]:
            raise ConfigError("the workerpool schema is missing in DATABASE_URL; run `workerpool migrate` first")
    return Supervisor(settings, drain=args.drain).run()


def cmd_stats(args: argparse.Namespace) -> int:
    from .stats import collect, render
    from .vacuum import Thresholds

    settings = _settings(args)
    if getattr(args, "watch", False):
        return _watch_stats(settings, args)
    with _db(settings) as conn:
        data = collect(conn, Thresholds.from_settings(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data))
    return 0


def _watch_stats(settings: Settings, args: argparse.Namespace) -> int:
    """`stats --watch`: refresh every --interval seconds (default 2) until Ctrl-C; survives a database blip."""
    import time
    from datetime import datetime

    import psycopg

    from .stats import collect, render
    from .vacuum import Thresholds

    tty = sys.stdout.isatty()
    conn = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = _db(settings)
                data = collect(conn, Thresholds.from_settings(settings))
                if args.json:
                    text = orjson.dumps(data).decode() + "\n"
                else:
                    text = f"{datetime.now():%H:%M:%S}  every {args.interval:g}s, Ctrl-C to stop\n\n" + render(data) + "\n"
            except (DatabaseUnavailable, psycopg.Error) as exc:
                conn = None
                text = f"{datetime.now():%H:%M:%S}  database unavailable: {' '.join(str(exc).split())[:200]}\n"
            sys.stdout.write(("\033[H\033[2J" if tty and not args.json else "") + text)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if conn is not None:
            conn.close()


def cmd_reindex(args: argparse.Namespace) -> int:
    from .reindex import ReindexError, reindex

    settings = _settings(args)
    with _db(settings, "reindex") as conn:
        try:
            result = reindex(settings, conn, args.table, atomic=args.atomic, chunk_size=args.chunk_size,
                             restart=args.restart)
        except ReindexError as exc:
            print(f"workerpool: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume", file=sys.stderr)
            return 130
    resumed = " (resumed)" if result.resumed else ""
    if args.atomic:
        print(f"reindexed {result.table}{resumed}: {result.written} record(s) written to {result.tmp_index}, "
              f"moved over {result.index}; {result.enqueued} key(s) changed meanwhile re-enqueued"
              + (f"; {len(result.skipped)} refused record(s) left to the workers to fail" if result.skipped else ""))
    else:
        print(f"reindex of {result.table}{resumed}: {result.rows} row(s) walked, {result.enqueued} enqueued "
              f"({result.rows - result.enqueued} already pending); the workers sync them to {result.index}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    settings = _settings(args)
    with _db(settings, "verify") as conn:
        report = verify(settings, conn, args.table, repair=args.repair)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.render())
    return 1 if report.drift else 0


def cmd_retry_failed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _db(settings) as conn:
        n = conn.execute("SELECT algolia_sync_retry_failed(%s, %s)", (args.table, args.id)).fetchone()[0]
    print(f"returned {n} failed row(s) to the queue")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _db(settings) as conn:
        n = conn.execute("SELECT cleanup_old_sync_records(%s)", (args.days,)).fetchone()[0]
    print(f"deleted {n} row(s) older than {args.days} day(s)")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import serve

    settings = config.load()
    logs.setup(settings.log_level, settings.secrets())
    serve(
        port=args.port,
        host=args.host,
        app_id=args.app_id or settings.algolia_app_id or "EMULATOR",
        api_key=args.api_key or settings.algolia_admin_key or "emulator-admin-key",
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(database_url=args.database_url)


def cmd_settings(args: argparse.Namespace) -> int:
    from .index_settings import SettingsError, desired_settings, push

    settings = _settings(args)
    settings.require_algolia()
    with _db(settings) as conn:
        try:
            desired = desired_settings(conn, args.file)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
    changes = push(settings, desired, dry_run=args.dry_run)
    for index, diff in changes.items():
        if not diff:
            print(f"{index}: up to date")
            continue
        print(f"{index}: {len(diff)} change(s){' (dry run, nothing applied)' if args.dry_run else ''}")
        for line in diff:
            print(f"  {line}")
    return 0


def _positive_days(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days {raw!r} is not a whole number; expected 0 or more") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--days {raw!r} is negative; expected 0 or more")
    return value


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--interval {raw!r} is not a number; expected seconds above 0") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--interval {raw!r} is not above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workerpool", description="Keep Algolia indices in sync with PostgreSQL.")
    parser.add_argument("--database-url", help="Postgres DSN (default: DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        # Also accepted after the command; SUPPRESS keeps an absent flag from erasing one given before it.
        p.add_argument("--database-url", default=argparse.SUPPRESS, help="Postgres DSN (default: DATABASE_URL)")
        return p

    add("migrate", cmd_migrate, "install or upgrade the schema (idempotent, safe from several hosts at once)")

    p = add("watch", cmd_watch, "register a table's index and attach its trigger")
    p.add_argument("table")
    p.add_argument("--index", required=True, help="Algolia index name (ALGOLIA_INDEX_PREFIX is prepended)")
    p.add_argument("--key", help="key column (default: the single-column primary key)")
    p.add_argument("--source", help="view that records are read from, keyed by the table's key")
    p.add_argument("--attributes", metavar="COL,COL", help="columns that make up a record (default: all); "
                   "updates to other columns enqueue nothing")
    p.add_argument("--transform", metavar="MODULE:FUNCTION", help="applied to each record dict; return None to delete")
    p.add_argument("--related", action="append", metavar="TABLE:FK_COLUMN[:REF_COLUMN]",
                   help="a change to TABLE re-enqueues the rows whose FK_COLUMN points at it (repeatable)")

    p = add("unwatch", cmd_unwatch, "detach a table's trigger and forget its registration")
    p.add_argument("table")

    p = add("run", cmd_run, "the supervisor and its workers")
    for flag, field in RUN_FLAGS.items():
        p.add_argument(flag, dest=field, metavar=config._FIELD_TO_VAR[field])
    p.add_argument("--drain", action="store_true", help="exit 0 once nothing is pending or processing")

    p = add("stats", cmd_stats, "queue depth, ages, rates and failures per table/index")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=_positive_seconds, default=2.0, help="seconds between refreshes (default 2)")

    p = add("retry-failed", cmd_retry_failed, "return failed rows to the queue")
    p.add_argument("--table")
    p.add_argument("--id", type=int, action="append", help="a failed row's id (repeatable)")

    p = add("cleanup", cmd_cleanup, "delete old log rows (cleanup_old_sync_records)")
    p.add_argument("--days", type=_positive_days, default=7)

    p = add("reindex", cmd_reindex, "full backfill of one table's index, with a progress bar (resumable)")
    p.add_argument("table")
    p.add_argument("--atomic", action="store_true",
                   help="build a temporary index and move it over the live one (changes made meanwhile are kept)")
    p.add_argument("--chunk-size", type=int, default=1000, help="keys per chunk (default 1000)")
    p.add_argument("--restart", action="store_true", help="ignore an interrupted run's progress and start over")

    p = add("verify", cmd_verify, "compare an index with its table: missing, extra, stale (exit 1 on drift)")
    p.add_argument("table")
    p.add_argument("--repair", action="store_true", help="enqueue the fixes (resync missing/stale, delete extra)")
    p.add_argument("--json", action="store_true")

    p = add("emulator", cmd_emulator, "the local Algolia-compatible server")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--app-id")
    p.add_argument("--api-key")

    add("demo", cmd_demo, "embedded Postgres + emulator + a sample catalog, synced and shown")

    p = add("settings", cmd_settings, "Algolia index settings kept as code")
    p.add_argument("action", choices=["push"], help="push: apply the settings, showing the diff against the live index")
    p.add_argument("--file", help="JSON file {index name: settings}; default: algolia_index_config.settings")
    p.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatabaseUnavailable, WatchError) as exc:  # bad input: one line, exit 2
        secrets = _known_secrets()
        message = str(exc)
        for secret in secrets:
            message = message.replace(secret, "***")
        print(f"workerpool: error: {message}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130


def _known_secrets() -> list[str]:
    """The secrets to scrub from an error line, even when the configuration itself is invalid."""
    try:
        return config.load().secrets()
    except ConfigError:
        candidates = (os.environ.get("ALGOLIA_ADMIN_KEY", ""), config.dsn_password(os.environ.get("DATABASE_URL", "")))
        return [s for s in candidates if s]


if __name__ == "__main__":
    sys.exit(main())
