"""Every exit code workerpool uses, defined once (the README's "Exit codes" table lists the same).

A command's codes (what the `workerpool` process returns to its caller, PM2 or systemd) come first;
then the codes a worker process returns to its supervisor, which the supervisor reads to decide
whether to restart it. This module imports nothing, so that any module may import it.
"""

from __future__ import annotations

# What a command returns.
EXIT_OK = 0  # success; for `run`, a clean stop or `--drain` finished
EXIT_FORCED = 1  # `run`: a second stop signal, everything was killed at once
EXIT_DRIFT = 1  # `verify`: the index and the table differ
EXIT_ERROR = 2  # bad configuration or input, an unusable database, a request refused as it stands
EXIT_CRASH_LOOP = 3  # `run`: workers kept dying; the supervisor gave up so that PM2/systemd can act
EXIT_ALGOLIA = 4  # Algolia unreachable or refusing the credentials
EXIT_ROWS_FAILED = 5  # `run --drain` drained, but rows went to failed during the run (or it could not tell)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports it

COMMAND_EXIT_CODES = frozenset(
    {EXIT_OK, EXIT_FORCED, EXIT_DRIFT, EXIT_ERROR, EXIT_CRASH_LOOP, EXIT_ALGOLIA, EXIT_ROWS_FAILED, EXIT_INTERRUPTED}
)

# What a worker process returns to its supervisor.
WORKER_EXIT_OK = 0  # stopped when asked: not restarted
WORKER_EXIT_CRASH = 1  # died (a bug, a transform that would not return): restarted with backoff
WORKER_EXIT_BOOT_ERROR = 3  # cannot start (bad DSN, schema missing): not respawned blindly
