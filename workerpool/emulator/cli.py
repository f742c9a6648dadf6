"""The emulator's one command line, behind both ``python -m workerpool.emulator`` and
``workerpool emulator``: the same options, the same defaults, the same exit codes.

Application ID and API key come from the flags, else ALGOLIA_APP_ID / ALGOLIA_ADMIN_KEY (environment
or ``.env``, as for every workerpool command), else the emulator's public defaults. Exit 0 after
SIGTERM/SIGINT; 2 with one line on stderr for a bad option, a host it will not serve
(``refuse_unsafe_bind``) or a port it cannot listen on.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from workerpool import config, logs, redaction
from workerpool.config import ConfigError
from workerpool.emulator.common import DEFAULT_API_KEY, DEFAULT_APP_ID, DEFAULT_MAX_RECORD_BYTES, DEFAULT_PORT
from workerpool.exit_codes import EXIT_ERROR

log = logging.getLogger("workerpool.emulator")

_NO_ENV = "no environment variable"


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port {raw!r} is not a port; expected a whole number from 0 to 65535")
    return value


def _record_bytes(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-record-bytes {raw!r} is not a size; expected a whole number above 0")
    return value


def _milliseconds(flag: str) -> Callable[[str], float]:
    """An argparse type for ``flag``: a finite number of milliseconds, 0 or more."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(
                f"{flag} {raw!r} is not a duration; expected a number of milliseconds, 0 or more"
            )
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options, on ``parser`` (its own, or ``workerpool emulator``'s subparser)."""
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT}; {_NO_ENV})",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"address to listen on; another than loopback needs --allow-remote (default: 127.0.0.1; {_NO_ENV})",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help=f"allow a non-loopback --host; also requires an API key of your own (default: off; {_NO_ENV})",
    )
    parser.add_argument(
        "--app-id",
        help=f"application id clients must send (default: ALGOLIA_APP_ID if set, else {DEFAULT_APP_ID}; "
        "environment: ALGOLIA_APP_ID)",
    )
    parser.add_argument(
        "--api-key",
        help="API key clients must send (default: ALGOLIA_ADMIN_KEY if set, else the emulator's public "
        "default; environment: ALGOLIA_ADMIN_KEY)",
    )
    parser.add_argument(
        "--max-record-bytes",
        type=_record_bytes,
        default=DEFAULT_MAX_RECORD_BYTES,
        dest="record_limit",  # not max_record_bytes: that is the setting MAX_RECORD_BYTES, which it does not read
        help="largest record accepted, in bytes, as an Algolia plan sets it; the workers' own check is "
        f"MAX_RECORD_BYTES (default: {DEFAULT_MAX_RECORD_BYTES}; {_NO_ENV})",
    )
    parser.add_argument(
        "--publish-delay-ms",
        type=_milliseconds("--publish-delay-ms"),
        default=0.0,
        metavar="N",
        help="how long a record write stays notPublished and unreadable, as Algolia indexes asynchronously; "
        f"the tasks of an index publish in order (default: 0, at once; {_NO_ENV})",
    )
    parser.add_argument(
        "--publish-ms-per-record",
        type=_milliseconds("--publish-ms-per-record"),
        default=0.0,
        metavar="N",
        help="more publish delay for each record of a task, so that a queue builds up under load "
        f"(default: 0; {_NO_ENV})",
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"log every request, at level debug (default: off; {_NO_ENV})"
    )


def run(args: argparse.Namespace) -> int:
    """Serve as ``args`` (from ``add_arguments``) say until SIGTERM/SIGINT; returns the exit code.

    ConfigError (one line, exit 2) for a bad setting, a refused host or a port it cannot listen on.
    """
    from workerpool.emulator.bind import refuse_unsafe_bind

    settings = config.load()
    app_id = args.app_id or settings.algolia_app_id or DEFAULT_APP_ID
    api_key = args.api_key or settings.algolia_admin_key or DEFAULT_API_KEY
    logs.setup("DEBUG" if args.debug else settings.log_level, [*settings.secrets(), api_key])
    refusal = refuse_unsafe_bind(args.host, args.allow_remote, api_key)
    if refusal:
        raise ConfigError(refusal)
    serve(
        args.port,
        host=args.host,
        app_id=app_id,
        api_key=api_key,
        max_record_bytes=args.record_limit,
        publish_delay_ms=args.publish_delay_ms,
        publish_ms_per_record=args.publish_ms_per_record,
    )
    return 0


def serve(
    port: int,
    host: str = "127.0.0.1",
    app_id: str = DEFAULT_APP_ID,
    api_key: str = DEFAULT_API_KEY,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    publish_delay_ms: float = 0.0,
    publish_ms_per_record: float = 0.0,
) -> None:
    """Run the emulator until SIGTERM/SIGINT, then return normally; record writes publish after
    ``publish_delay_ms`` plus ``publish_ms_per_record`` per record (``Emulator.set_publish_delay``).

    Logs ``emulator listening`` (action ``emulator_started``, with the URL) once listening. A port
    it cannot listen on (taken, or a host it cannot bind) raises ConfigError.
    """
    from workerpool.emulator.server import Emulator

    emu = Emulator(host=host, port=port, app_id=app_id, api_key=api_key, max_record_bytes=max_record_bytes)
    emu.set_publish_delay(publish_delay_ms, publish_ms_per_record)  # ValueError before listening if invalid
    try:
        emu.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    url = emu.url
    log.info(
        "emulator listening",
        extra={
            "action": "emulator_started",
            "url": url,
            "app_id": app_id,
            "max_record_bytes": max_record_bytes,
            "publish_delay_ms": publish_delay_ms,
            "publish_ms_per_record": publish_ms_per_record,
        },
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("emulator stopped", extra={"action": "emulator_stopped", "url": url})


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _scrub(message: str, api_key: str | None) -> str:
    """``message`` on one line without any secret this process knows of (for when the settings failed to load)."""
    message = " ".join(message.split())
    environ = os.environ
    secrets = [api_key or "", environ.get("ALGOLIA_ADMIN_KEY", ""), environ.get("DASHBOARD_TOKEN", "").strip()]
    secrets += redaction.dsn_passwords(environ.get("DATABASE_URL", "")) + redaction.environment_secrets()
    for secret in secrets:
        if len(secret) >= 3:  # as logs.SecretFilter: a one-letter secret would blank the message
            message = message.replace(secret, "***")
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workerpool.emulator [--port P] [--host H --allow-remote --api-key K] ...``."""
    parser = _Parser(
        prog="python -m workerpool.emulator",
        description="Serve an in-memory emulation of Algolia's Search REST API (same as `workerpool emulator`).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"{parser.prog}: error: {_scrub(str(exc), args.api_key)}", file=sys.stderr)
        return EXIT_ERROR
