"""`workerpool` command line (also `python -m workerpool`).

Flags override the environment, which overrides `.env`. Bad input exits 2 with one line on stderr
naming the bad value and what is allowed; secrets never appear in that line. `parser` builds the
command line, `commands` runs each command; this module turns their failures into exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from workerpool.capture.model import WatchError
from workerpool.cli.errors import fail
from workerpool.cli.parser import build_parser
from workerpool.config import ConfigError
from workerpool.db.connection import DatabaseUnavailable
from workerpool.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED
from workerpool.failures import algolia_failure, database_error

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "database_url", None) and argv is None:
        from setproctitle import setproctitle

        setproctitle(f"workerpool {args.command}")  # `ps` would show --database-url and its password
    try:
        code: int = args.func(args)
        return code
    except (ConfigError, DatabaseUnavailable, WatchError) as exc:  # bad input: one line, exit 2
        return fail(args, str(exc), EXIT_ERROR)
    except psycopg.Error as exc:  # the database failed under the command
        return fail(args, f"database error: {database_error(exc)}", EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = algolia_failure(exc)
        if failure is None:
            raise
        code, message = failure
        return fail(args, message, code)
