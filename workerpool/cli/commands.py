"""What each `workerpool` command does, given its parsed arguments; returns the exit code."""

from __future__ import annotations

import argparse
import logging
import sys

import orjson
import psycopg

from workerpool import config, logs
from workerpool.cli.errors import fail
from workerpool.config import Settings
from workerpool.db import pooling
from workerpool.db.connection import DatabaseUnavailable, connect
from workerpool.exit_codes import EXIT_DRIFT, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED

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
    "--health-host": "health_host",
    "--log-level": "log_level",
    "--index-prefix": "algolia_index_prefix",
}


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {field: getattr(args, field, None) for field in RUN_FLAGS.values()}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    settings = config.load(overrides)
    logs.setup(settings.log_level, settings.secrets())
    pooling.use(settings.database_pool_mode)
    return settings


def _db(settings: Settings, purpose: str = "cli", check_schema: bool = True) -> psycopg.Connection:
    """A connection to DATABASE_URL whose schema matches this code (exit 2 otherwise: see db.version.check_schema)."""
    from workerpool.db.version import check_schema as check

    settings.require_database()
    conn = connect(settings.database_url, purpose=purpose, timeout=5)
    if check_schema:
        try:
            check(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def cmd_migrate(args: argparse.Namespace) -> int:
    from workerpool.ops.migrate import migrate

    settings = _settings(args)
    with _db(settings, "migrate", check_schema=False) as conn:
        applied = migrate(conn)
        print(f"schema up to date ({len(applied)} migration(s) applied)")
        if args.worker_role is not None:
            from workerpool.db.privileges import setup_worker_role

            created = setup_worker_role(conn, args.worker_role)
            print(
                f"worker role {args.worker_role} {'created (LOGIN, no password yet)' if created else 'exists'}; "
                "granted what the pool needs (docs/roles.md)"
            )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from workerpool.capture.model import Related
    from workerpool.capture.triggers import watch, watch_warnings

    settings = _settings(args)
    attributes = [a.strip() for a in args.attributes.split(",")] if args.attributes is not None else None
    related = [Related.parse(spec) for spec in args.related or ()]
    with _db(settings) as conn:
        watched = watch(
            conn,
            args.table,
            args.index,
            key=args.key,
            source=args.source,
            attributes=attributes,
            transform=args.transform,
            related=related,
        )
        warnings = watch_warnings(conn, watched)
    source = f" from {watched.source_view}" if watched.source_view else ""
    index = settings.algolia_index_prefix + watched.index_name
    key = f"key ({', '.join(watched.key_columns)})" if watched.key_columns else f"key {watched.key_column}"
    print(f"watching {watched.table_name} ({key}){source} -> index {index}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_unwatch(args: argparse.Namespace) -> int:
    """Detach a table; its pending changes (deletes included) are dropped only with --drop-pending."""
    from workerpool.ops.tables import unwatch_table

    settings = _settings(args)
    with _db(settings) as conn:
        name, left = unwatch_table(conn, args.table, args.drop_pending)
    dropped = f"dropped {left.pending} pending change(s)" if left and left.pending else "no pending changes"
    kept = f"; {left.failed} failed row(s) kept" if left and left.failed else ""
    print(f"no longer watching {name} (its index was left as it is); {dropped}{kept}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workerpool.ops.tables import watched_indices
    from workerpool.process.running import run

    settings = _settings(args)  # logs are set up here already
    settings.require_algolia()  # before the database is touched, as `run` checks it
    with _db(settings, "check") as conn:  # the schema version, before any worker starts
        indices = [settings.algolia_index_prefix + i for i in watched_indices(conn)]
    code = run(settings, drain=args.drain, configure_logging=False)
    if args.wait_published and code in (EXIT_OK, EXIT_ROWS_FAILED):
        from workerpool.ops.published import wait_indices_published

        wait_indices_published(settings, indices)
        print(f"Algolia has published every write it accepted ({len(indices)} index(es))")
    return code


def cmd_stats(args: argparse.Namespace) -> int:
    from workerpool.observability.vacuum import Thresholds
    from workerpool.ops.stats import collect, json_text, render

    settings = _settings(args)
    if getattr(args, "watch", False):
        return _watch_stats(settings, args)
    with _db(settings) as conn:
        data = collect(conn, Thresholds.from_settings(settings))
    if args.json:
        sys.stdout.write(json_text(data, indent=True) + "\n")
    else:
        sys.stdout.write(render(data))
    return 0


def _watch_stats(settings: Settings, args: argparse.Namespace) -> int:
    """`stats --watch`: refresh every --interval seconds (default 2) until Ctrl-C; survives a database blip."""
    import time
    from datetime import datetime

    import psycopg

    from workerpool.observability.vacuum import Thresholds
    from workerpool.ops.stats import collect, json_text, render

    tty = sys.stdout.isatty()
    conn = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = _db(settings)
                data = collect(conn, Thresholds.from_settings(settings))
                if args.json:
                    text = json_text(data) + "\n"
                else:
                    text = (
                        f"{datetime.now():%H:%M:%S}  every {args.interval:g}s, Ctrl-C to stop\n\n" + render(data) + "\n"
                    )
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
    from workerpool.ops.reindex import ReindexError, reindex

    settings = _settings(args)
    with _db(settings, "reindex") as conn:
        try:
            result = reindex(
                settings, conn, args.table, atomic=args.atomic, chunk_size=args.chunk_size, restart=args.restart
            )
        except ReindexError as exc:
            return fail(args, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
    resumed = " (resumed)" if result.resumed else ""
    if args.atomic:
        print(
            f"reindexed {result.table}{resumed}: {result.written} record(s) written to {result.tmp_index}, "
            f"moved over {result.index}; {result.enqueued} key(s) changed meanwhile re-enqueued"
            + (f"; {len(result.skipped)} refused record(s) left to the workers to fail" if result.skipped else "")
        )
    else:
        print(
            f"reindex of {result.table}{resumed}: {result.rows} row(s) walked, {result.enqueued} enqueued "
            f"({result.rows - result.enqueued} already pending); the workers sync them to {result.index}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from workerpool.ops.verify import verify

    settings = _settings(args)
    with _db(settings, "verify") as conn:
        report = verify(settings, conn, args.table, repair=args.repair, published_first=not args.no_wait_published)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.render())
    return EXIT_DRIFT if report.drift else EXIT_OK


def cmd_retry_failed(args: argparse.Namespace) -> int:
    from workerpool.ops.tables import retry_failed

    settings = _settings(args)
    with _db(settings) as conn:
        retried = retry_failed(conn, args.table, args.id)
    n, kept = retried.returned, retried.kept_too_long
    print(
        f"returned {n} failed row(s) to the queue"
        + (f"; kept {kept} of keys too long for an objectID (they can never sync: shorten the key)" if kept else "")
    )
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from workerpool.ops.tables import cleanup

    with _db(settings) as conn:
        n = cleanup(conn, args.days)
    print(f"deleted {n} row(s) older than {args.days} day(s)")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from workerpool.emulator.cli import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from workerpool.ops.demo import run_demo

    return run_demo(database_url=args.database_url)


def cmd_settings(args: argparse.Namespace) -> int:
    """`settings push`: exit 2 with one line per unknown or ill-typed setting, before any request."""
    from workerpool.ops.index_settings import SettingsError, check, desired_settings, push

    settings = _settings(args)
    settings.require_algolia()
    with _db(settings) as conn:
        try:
            desired = desired_settings(conn, args.file)
            check(desired)
        except SettingsError as exc:
            for line in str(exc).splitlines():
                fail(args, line, EXIT_ERROR)
            return EXIT_ERROR
    changes = push(
        settings, desired, dry_run=args.dry_run, forward_to_replicas=args.algolia_forward_to_replicas or None
    )
    for index, diff in changes.items():
        if not diff:
            print(f"{index}: up to date")
            continue
        print(f"{index}: {len(diff)} change(s){' (dry run, nothing applied)' if args.dry_run else ''}")
        for line in diff:
            print(f"  {line}")
    return 0
