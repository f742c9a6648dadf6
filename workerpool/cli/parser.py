"""The `workerpool` argument parser: every command, its flags, their meanings and defaults (from
`config.MEANINGS`), and the validators that turn a bad flag value into one line and exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from workerpool import config
from workerpool.cli.commands import (
    RUN_FLAGS,
    cmd_cleanup,
    cmd_demo,
    cmd_emulator,
    cmd_migrate,
    cmd_reindex,
    cmd_retry_failed,
    cmd_run,
    cmd_settings,
    cmd_stats,
    cmd_unwatch,
    cmd_verify,
    cmd_watch,
)
from workerpool.exit_codes import EXIT_ERROR

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
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _local(meaning: str, default: str = "off") -> str:
    """The `--help` text of a flag that no environment variable sets (see config.flag_help for the others)."""
    return f"{meaning} (default: {default}; no environment variable)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workerpool", description="Keep Algolia indices in sync with PostgreSQL.")
    parser.add_argument("--database-url", help=config.flag_help("DATABASE_URL"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(func=func)
        # Also accepted after the command; SUPPRESS keeps an absent flag from erasing one given before it.
        p.add_argument("--database-url", default=argparse.SUPPRESS, help=config.flag_help("DATABASE_URL"))
        return p

    p = add("migrate", cmd_migrate, "install or upgrade the schema (idempotent, safe from several hosts at once)")
    p.add_argument(
        "--worker-role",
        metavar="NAME",
        help=_local(
            "also create (if missing) the non-superuser role the pool runs as and grant it what it needs "
            "(docs/roles.md)",
            "none: no role is created or granted",
        ),
    )

    p = add("watch", cmd_watch, "register a table's index and attach its trigger")
    p.add_argument("table", help="the table to watch, optionally schema-qualified")
    p.add_argument(
        "--index", required=True, help=_local("Algolia index name; ALGOLIA_INDEX_PREFIX is prepended", "none, required")
    )
    p.add_argument(
        "--key",
        metavar="COL[,COL]",
        help=_local(
            "key column, or the columns of a composite key joined by commas (objectID {a,b})", "the primary key"
        ),
    )
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
        help=_local(
            "a change to TABLE re-enqueues the rows whose FK_COLUMN points at it (repeatable; a foreign key of "
            "several columns: TABLE:A,B[:REF_A,REF_B])",
            "none",
        ),
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
    p.add_argument(
        "--wait-published",
        action="store_true",
        help=_local("with --drain: before exiting, wait until Algolia has published every write it accepted"),
    )

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
    p.add_argument(
        "--no-wait-published",
        action="store_true",
        help=_local("compare at once, without first waiting for Algolia to publish the writes it accepted"),
    )

    from workerpool.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(add("emulator", cmd_emulator, "the local Algolia-compatible server"))

    add("demo", cmd_demo, "embedded Postgres + emulator + a sample catalog, synced and shown")

    p = add("settings", cmd_settings, "Algolia index settings kept as code")
    p.add_argument("action", choices=["push"], help="push: apply the settings, showing the diff against the live index")
    p.add_argument("--file", help=_local("JSON file {index name: settings}", "algolia_index_config.settings"))
    p.add_argument("--dry-run", action="store_true", help=_local("show the diff, change nothing"))
    p.add_argument(
        "--forward-to-replicas",
        dest="algolia_forward_to_replicas",
        action="store_true",
        default=None,
        help=config.flag_help("ALGOLIA_FORWARD_TO_REPLICAS"),
    )
    return parser
