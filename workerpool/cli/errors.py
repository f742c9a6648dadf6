"""A command's failure as the user sees it: one line on stderr with every known secret scrubbed."""

from __future__ import annotations

import argparse
import os
import sys

from workerpool import config, redaction
from workerpool.config import ConfigError


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr, secrets scrubbed; returns the exit code."""
    message = " ".join(message.split())
    for secret in _known_secrets(args):
        if len(secret) >= 3:  # as logs.SecretFilter: a one-letter password would blank the message
            message = message.replace(secret, "***")
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
            + [s for s in (os.environ.get("ALGOLIA_ADMIN_KEY", ""), os.environ.get("DASHBOARD_TOKEN", "").strip()) if s]
            + redaction.dsn_passwords(os.environ.get("DATABASE_URL", ""))
        )
