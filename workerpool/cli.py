"""`workerpool` command line (also `python -m workerpool`).

Flags override the environment, which overrides `.env`. Bad input exits 2 with one line on stderr
naming the bad value and what is allowed; secrets never appear in that line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import orjson
import psycopg

from workerpool import config, logs
from workerpool.capture.model import WatchError
from workerpool.config import EXIT_CONFIG_ERROR, ConfigError, Settings
from workerpool.db.connection import DatabaseUnavailable, connect
from workerpool.failures import EXIT_DRIFT, algolia_failure

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
    return settings


def _db(settings: Settings, purpose: str = "cli", check_schema: bool = True) -> psycopg.Connection:
    """A connection to DATABASE_URL whose schema matches this code (exit 2 otherwise: see migrate.check_schema)."""
    from workerpool.ops.migrate import check_schema as check

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
    print(
        f"watching {watched.table_name} (key {watched.key_column}){source} -> index {settings.algolia_index_prefix}{watched.index_name}"
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_unwatch(args: argparse.Namespace) -> int:
    """Detach a table; its pending changes (deletes included) are dropped only with --drop-pending."""
    from psycopg import sql

    from workerpool.capture.model import find_watched
    from workerpool.capture.triggers import unwatch
    from workerpool.ops.tables import backlog

    settings = _settings(args)
    with _db(settings) as conn, conn.transaction():
        try:
            watched = find_watched(conn, args.table)
            name, relation = watched.table_name, watched.relation or watched.table_name
        except WatchError:
            name = relation = (
                None  # unwatch says why it cannot, or detaches the triggers of a table that lost its registration
            )
        if relation is not None and conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()[0]:
            # Writers finish first and wait for us: the count below is what gets dropped.
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.SQL(relation)))
        left = backlog(conn, name) if name is not None else None
        if left and left.pending and not args.drop_pending:
            raise ConfigError(
                f"{name} has {left.pending} pending change(s) not yet in its index (deletes included); unwatching "
                "would drop them: let `workerpool run --drain` sync them first, or pass --drop-pending to drop them"
            )
        name = unwatch(conn, name or args.table)
    dropped = f"dropped {left.pending} pending change(s)" if left and left.pending else "no pending changes"
    kept = f"; {left.failed} failed row(s) kept" if left and left.failed else ""
    print(f"no longer watching {name} (its index was left as it is); {dropped}{kept}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workerpool.db.connection import require
    from workerpool.runtime.supervisor import Supervisor

    settings = _settings(args)
    settings.require_database()
    settings.require_algolia()
    require(settings.database_url)
    with _db(settings, "check"):
        pass
    return Supervisor(settings, drain=args.drain).run()


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
            return _fail(args, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume", file=sys.stderr)
            return 130
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
        report = verify(settings, conn, args.table, repair=args.repair)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.render())
    return EXIT_DRIFT if report.drift else 0


def cmd_retry_failed(args: argparse.Namespace) -> int:
    from workerpool.ops.tables import queue_table_name

    settings = _settings(args)
    with _db(settings) as conn:
        table = queue_table_name(conn, args.table) if args.table is not None else None
        n = conn.execute("SELECT algolia_sync_retry_failed(%s, %s)", (table, args.id)).fetchone()[0]
    print(f"returned {n} failed row(s) to the queue")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _db(settings) as conn:
        n = conn.execute("SELECT cleanup_old_sync_records(%s)", (args.days,)).fetchone()[0]
    print(f"deleted {n} row(s) older than {args.days} day(s)")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from workerpool.emulator.cli import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from workerpool.ops.demo import run_demo

    return run_demo(database_url=args.database_url)


def cmd_settings(args: argparse.Namespace) -> int:
    from workerpool.ops.index_settings import SettingsError, desired_settings, push

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


MAX_DAYS = 36_500  # a century: past it the log's timestamps would overflow `now() - days`


def _bounded(flag: str, lo: int, hi: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from lo to hi, refused in one line naming the flag and the range."""

    def parse(raw: str) -> int:
        expected = f"expected a whole number{unit} from {lo} to {hi}"
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {raw!r} is not a whole number; {expected}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(
                f"{flag} {raw!r} is {'negative' if value < 0 else 'too small'}; {expected}"
            )
        if value > hi:
            raise argparse.ArgumentTypeError(f"{flag} {raw!r} is too large; {expected}")
        return value

    return parse


_days = _bounded("--days", 0, MAX_DAYS, " of days")
_chunk_size = _bounded("--chunk-size", 1, 100_000)
_queue_id = _bounded("--id", 1, 2**63 - 1)


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--interval {raw!r} is not a number; expected seconds above 0") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--interval {raw!r} is not above 0")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_CONFIG_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _local(meaning: str, default: str = "off") -> str:
    """The `--help` text of a flag that no environment variable sets (see config.flag_help for the others)."""
    return f"{meaning} (default: {default}; no environment variable)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workerpool", description="Keep Algolia indices in sync with PostgreSQL.")
    parser.add_argument("--database-url", help=config.flag_help("DATABASE_URL"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        # Also accepted after the command; SUPPRESS keeps an absent flag from erasing one given before it.
        p.add_argument("--database-url", default=argparse.SUPPRESS, help=config.flag_help("DATABASE_URL"))
        return p

    add("migrate", cmd_migrate, "install or upgrade the schema (idempotent, safe from several hosts at once)")

    p = add("watch", cmd_watch, "register a table's index and attach its trigger")
    p.add_argument("table", help="the table to watch, optionally schema-qualified")
    p.add_argument(
        "--index", required=True, help=_local("Algolia index name; ALGOLIA_INDEX_PREFIX is prepended", "none, required")
    )
    p.add_argument("--key", help=_local("key column", "the single-column primary key"))
    p.add_argument("--source", help=_local("view that records are read from, keyed by the table's key", "the table"))
    p.add_argument(
        "--attributes",
        metavar="COL,COL",
        help=_local("columns that make up a record; updates to other columns enqueue nothing", "all columns"),
    )
    p.add_argument(
        "--transform",
        metavar="MODULE:FUNCTION",
        help=_local("applied to each record dict; return None to delete", "none"),
    )
    p.add_argument(
        "--related",
        action="append",
        metavar="TABLE:FK_COLUMN[:REF_COLUMN]",
        help=_local("a change to TABLE re-enqueues the rows whose FK_COLUMN points at it (repeatable)", "none"),
    )

    p = add(
        "unwatch",
        cmd_unwatch,
        "detach a table's trigger and forget its registration "
        "(refused while changes are pending, unless --drop-pending)",
    )
    p.add_argument("table", help="a watched table")
    p.add_argument(
        "--drop-pending",
        action="store_true",
        help=_local("drop the table's pending changes (deletes included) instead of refusing"),
    )

    p = add("run", cmd_run, "the supervisor and its workers")
    for flag, field in RUN_FLAGS.items():
        var = config._FIELD_TO_VAR[field]
        p.add_argument(flag, dest=field, metavar=var, help=config.flag_help(var))
    p.add_argument("--drain", action="store_true", help=_local("exit 0 once nothing is pending or processing"))

    p = add("stats", cmd_stats, "queue depth, ages, rates and failures per table/index")
    p.add_argument("--json", action="store_true", help=_local("JSON instead of tables"))
    p.add_argument("--watch", action="store_true", help=_local("refresh every --interval seconds until Ctrl-C"))
    p.add_argument(
        "--interval", type=_positive_seconds, default=2.0, help=_local("seconds between --watch refreshes", "2")
    )

    p = add("retry-failed", cmd_retry_failed, "return failed rows to the queue")
    p.add_argument("--table", help=_local("only this table's failed rows", "every table"))
    p.add_argument(
        "--id",
        type=_queue_id,
        action="append",
        help=_local("only this failed row's id (repeatable)", "every failed row"),
    )

    p = add("cleanup", cmd_cleanup, "delete old log rows (cleanup_old_sync_records)")
    p.add_argument(
        "--days", type=_days, default=7, help=_local(f"delete rows older than this many days, 0 to {MAX_DAYS}", "7")
    )

    p = add("reindex", cmd_reindex, "full backfill of one table's index, with a progress bar (resumable)")
    p.add_argument("table", help="a watched table")
    p.add_argument(
        "--atomic",
        action="store_true",
        help=_local("build a temporary index and move it over the live one (changes made meanwhile are kept)"),
    )
    p.add_argument("--chunk-size", type=_chunk_size, default=1000, help=_local("keys per chunk", "1000"))
    p.add_argument("--restart", action="store_true", help=_local("ignore an interrupted run's progress and start over"))

    p = add(
        "verify",
        cmd_verify,
        "compare an index with its table: missing, extra, stale "
        "(exit 1 on drift, 2 on an error, 4 when Algolia is unreachable or refuses the key)",
    )
    p.add_argument("table", help="a watched table")
    p.add_argument(
        "--repair",
        action="store_true",
        help=_local("enqueue the fixes (resync missing and stale records, delete extra ones)"),
    )
    p.add_argument("--json", action="store_true", help=_local("the report as JSON"))

    from workerpool.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(add("emulator", cmd_emulator, "the local Algolia-compatible server"))

    add("demo", cmd_demo, "embedded Postgres + emulator + a sample catalog, synced and shown")

    p = add("settings", cmd_settings, "Algolia index settings kept as code")
    p.add_argument("action", choices=["push"], help="push: apply the settings, showing the diff against the live index")
    p.add_argument("--file", help=_local("JSON file {index name: settings}", "algolia_index_config.settings"))
    p.add_argument("--dry-run", action="store_true", help=_local("show the diff, change nothing"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "database_url", None) and argv is None:
        from setproctitle import setproctitle

        setproctitle(f"workerpool {args.command}")  # `ps` would show --database-url and its password
    try:
        return args.func(args)
    except (ConfigError, DatabaseUnavailable, WatchError) as exc:  # bad input: one line, exit 2
        return _fail(args, str(exc), EXIT_CONFIG_ERROR)
    except psycopg.Error as exc:  # the database failed under the command
        return _fail(args, f"database error: {exc}", EXIT_CONFIG_ERROR)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = algolia_failure(exc)
        if failure is None:
            raise
        code, message = failure
        return _fail(args, message, code)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr, secrets scrubbed; returns the exit code."""
    message = " ".join(message.split())
    for secret in _known_secrets(args):
        if len(secret) >= 3:  # as logs.SecretFilter: a one-letter password would blank the message
            message = message.replace(secret, "***")
    print(f"workerpool: error: {message}", file=sys.stderr)
    return code


def _known_secrets(args: argparse.Namespace) -> list[str]:
    """The secrets to scrub from an error line, even when the configuration itself is invalid."""
    found = config.dsn_passwords(getattr(args, "database_url", None) or "") + config.environment_secrets()
    try:
        return found + config.load().secrets()
    except ConfigError:
        return (
            found
            + [s for s in (os.environ.get("ALGOLIA_ADMIN_KEY", ""), os.environ.get("DASHBOARD_TOKEN", "").strip()) if s]
            + config.dsn_passwords(os.environ.get("DATABASE_URL", ""))
        )


if __name__ == "__main__":
    sys.exit(main())
