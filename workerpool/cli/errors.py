"""A command's failure as the user sees it: one line on stderr with every known secret scrubbed."""

from __future__ import annotations

import argparse
import os
import sys

from workerpool import config, redaction
from workerpool.config import ConfigError


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr, secrets scrubbed; returns the exit code."""
    message = redaction.scrub(" ".join(message.split()), _known_secrets(args))
    print(f"workerpool: error: {message}", file=sys.stderr)
    return code


def _known_secrets(args: argparse.Namespace) -> list[str]:
    """The secrets to scrub from an error line, even when the configuration itself is invalid."""
    found = redaction.dsn_passwords(getattr(args, "database_url", None) or "") + redaction.environment_secrets()
    try:
        return found + config.load().secrets()
    except ConfigError:
        return (
            found
            + [s for s in (os.environ.get("ALGOLIA_ADMIN_KEY", ""), _usable_token()) if s]
            + redaction.dsn_passwords(os.environ.get("DATABASE_URL", ""))
        )


def _usable_token() -> str:
    """DASHBOARD_TOKEN as a secret to scrub, unless the configuration refused it: a refused token is
    never used, and its refusal never echoes it, while starring it would ("is too ***" for `short`)."""
    token = os.environ.get("DASHBOARD_TOKEN", "").strip()
    try:
        return config._token("DASHBOARD_TOKEN", token)
    except ConfigError:
        return ""
