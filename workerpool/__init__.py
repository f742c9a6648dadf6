"""workerpool: keeps Algolia indices in sync with PostgreSQL, coordinated by Postgres alone.

The public Python API is exactly the names in `__all__`; every module under `workerpool` is private
and may change. See docs/api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Imported on first use: `workerpool --help` and every worker import this package, and the API pulls
# in the algoliasearch transport and the supervisor.
_PUBLIC = {
    "AlgoliaService": "workerpool.api.algolia",
    "Batch": "workerpool.runtime.queue",
    "BatchResult": "workerpool.api.results",
    "ConfigError": "workerpool.config",
    "DatabaseUnavailable": "workerpool.db.connection",
    "DatabaseService": "workerpool.api.database",
    "Settings": "workerpool.config",
    "SyncItem": "workerpool.runtime.queue",
    "SyncResult": "workerpool.api.results",
    "Watched": "workerpool.capture.model",
    "WatchError": "workerpool.capture.model",
    "enqueue": "workerpool.api.enqueue",
    "run": "workerpool.process.running",
}

__all__ = [
    "AlgoliaService",
    "Batch",
    "BatchResult",
    "ConfigError",
    "DatabaseService",
    "DatabaseUnavailable",
    "Settings",
    "SyncItem",
    "SyncResult",
    "WatchError",
    "Watched",
    "__version__",
    "enqueue",
    "run",
]

if TYPE_CHECKING:
    from workerpool.api.algolia import AlgoliaService
    from workerpool.api.database import DatabaseService
    from workerpool.api.enqueue import enqueue
    from workerpool.api.results import BatchResult, SyncResult
    from workerpool.capture.model import Watched, WatchError
    from workerpool.config import ConfigError, Settings
    from workerpool.db.connection import DatabaseUnavailable
    from workerpool.process.running import run
    from workerpool.runtime.model import Batch, SyncItem


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'workerpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
