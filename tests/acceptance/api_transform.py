"""A record transform for the public API's comparison test (imported by the workers and the custom loop)."""

from __future__ import annotations

from typing import Any


def product(record: dict[str, Any]) -> dict[str, Any] | None:
    """Adds a label; drops the record (a delete) for products priced over 300."""
    if record["price"] is not None and record["price"] > 300:
        return None
    return {**record, "label": record["name"].upper()}
