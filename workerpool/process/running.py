"""`run`: the supervisor and its workers, started from Python."""

from __future__ import annotations

from dataclasses import replace

from workerpool import logs
from workerpool.config import Settings
from workerpool.db.connection import require
from workerpool.process.supervisor import Supervisor


def run(settings: Settings, workers: int | None = None, drain: bool = False, configure_logging: bool = True) -> int:
    """Run the worker pool as `workerpool run` does, in this process, until it stops; returns its
    exit code (0 after a graceful stop, see the README's exit codes).

    This process becomes the supervisor: it forks `workers` worker processes (default: WORKERS),
    restarts them, and stops on SIGTERM or SIGINT, so call it from the main thread of a process that
    does nothing else (a Django management command, a container's entry point). With `drain` it
    returns once nothing is left to sync. Raises `ConfigError` when DATABASE_URL or the Algolia
    credentials are missing, `DatabaseUnavailable` when the database cannot be reached.
    `configure_logging` installs the workers' JSON logs on stdout at LOG_LEVEL (as the command does).

    Examples:
        >>> import workerpool
        >>> raise SystemExit(workerpool.run(workerpool.Settings.from_env(), workers=4))
    """
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers={workers!r} must be at least 1")
        settings = replace(settings, workers=workers)
    settings.require_database()
    settings.require_algolia()
    require(settings.database_url)
    if configure_logging:
        logs.setup(settings.log_level, settings.secrets())
    return Supervisor(settings, drain=drain).run()
