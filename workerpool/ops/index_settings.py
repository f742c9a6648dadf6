"""Algolia index settings kept as code: a JSON file or algolia_index_config.settings, checked against
Algolia's own schema (`settings_schema`) and pushed with a diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg

from workerpool.config import Settings
from workerpool.db.queries import Q
from workerpool.ops.admin import Admin
from workerpool.ops.settings_schema import problems

MAX_FILE_BYTES = 10 * 1024 * 1024  # settings of many indices fit in far less


class SettingsError(Exception):
    """A settings file that cannot be used; the message names it and says why."""


def desired_settings(conn: psycopg.Connection, file: str | None) -> dict[str, dict[str, Any]]:
    """Index name (without prefix) -> settings, from `file` or from algolia_index_config."""
    if file:
        try:
            with Path(file).open("rb") as f:
                text = f.read(MAX_FILE_BYTES + 1)  # bounded: `/dev/zero` or a pipe that never ends
        except FileNotFoundError:
            raise SettingsError(f"--file {file!r} does not exist") from None
        except OSError as exc:
            raise SettingsError(f"--file {file!r} cannot be read: {exc.strerror or exc}") from None
        if len(text) > MAX_FILE_BYTES:
            raise SettingsError(
                f"--file {file!r} is larger than {MAX_FILE_BYTES} bytes; expected a JSON file of index settings"
            )
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(f"--file {file!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise SettingsError(f"--file {file!r} must be a JSON object of {{index name: {{setting: value}}}}")
        return data
    rows = conn.execute(Q.index_settings).fetchall()
    return dict(rows)


def diff(live: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """One line per setting that would change: `name: live -> desired`."""
    lines = []
    for key in sorted(desired):
        if live.get(key) != desired[key]:
            before = orjson.dumps(live[key]).decode() if key in live else "(unset)"
            lines.append(f"{key}: {before} -> {orjson.dumps(desired[key]).decode()}")
    return lines


def check(desired: dict[str, dict[str, Any]]) -> None:
    """Raise SettingsError, one line per problem, unless Algolia's schema accepts every setting."""
    found = [line for name, wanted in sorted(desired.items()) for line in problems(name, wanted)]
    if found:
        raise SettingsError("\n".join(found))


def push(
    settings: Settings,
    desired: dict[str, dict[str, Any]],
    dry_run: bool = False,
    forward_to_replicas: bool | None = None,
) -> dict[str, list[str]]:
    """Check the desired settings against Algolia's schema (SettingsError before any request), then
    compare each index's live settings with them and apply the difference; `forward_to_replicas`
    (default ALGOLIA_FORWARD_TO_REPLICAS) applies it to the indices' replicas too."""
    check(desired)
    forward = settings.algolia_forward_to_replicas if forward_to_replicas is None else forward_to_replicas
    client = Admin(settings)
    changes: dict[str, list[str]] = {}
    try:
        for name, wanted in sorted(desired.items()):
            index = settings.algolia_index_prefix + name
            live = client.get_settings(index) or {}  # a missing index has no settings yet
            changes[index] = diff(live, wanted)
            if changes[index] and not dry_run:
                client.wait_published(index, client.set_settings(index, wanted, forward_to_replicas=forward))
    finally:
        client.close()
    return changes
