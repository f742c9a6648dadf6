"""Hatch build hook: a wheel ships the top-level sql/ (schema, migrations, queries) as workerpool/db/sql.

The SQL is kept once, in sql/, the directory a DBA reviews. In the source tree workerpool/db/sql is a
symlink to it, so a checkout and an editable install read it where a wheel puts it (`resources.files(
"workerpool.db") / "sql"`); the symlink itself is excluded from the wheel (pyproject.toml), which gets
the files instead. An editable wheel gets nothing: it would install a copy that nothing reads.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class SqlBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds sql/ to a standard wheel as workerpool/db/sql."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Called before each build: `version` is "standard" or "editable" for a wheel."""
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"]["sql"] = "workerpool/db/sql"
