"""A sync loop of your own, written with workerpool's public API only (docs/api.md shows it).

Run it like `workerpool run`: `python api_example.py` reads DATABASE_URL, ALGOLIA_* and the rest
from the environment or `.env`; `--drain` returns once nothing is left to sync. The tests type-check
this file with `mypy --strict` and run it against the emulator.
"""

from __future__ import annotations

import sys
import time

from workerpool import AlgoliaService, ConfigError, DatabaseService, Settings


def sync(settings: Settings, drain: bool = False) -> int:
    """Claim, read, build and send, settle; until stopped (or, with `drain`, until idle).
    Returns how many rows were synced."""
    synced = 0
    with DatabaseService(settings.database_url, settings) as db, AlgoliaService(db) as algolia:
        while True:
            items = db.get_pending_syncs(settings.batch_size)
            if not items:
                if drain and db.idle():
                    return synced
                time.sleep(0.05 if drain else settings.polling_interval / 1000)
                continue
            results = algolia.sync_batch(items)
            db.settle(results)  # acknowledge, retry with backoff, fail, or give back: as the workers do
            synced += sum(1 for r in results if r.status == "completed")


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    synced = sync(settings, drain="--drain" in sys.argv[1:])
    print(f"synced {synced} row(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
