"""What the tests and benchmarks share: a top-level package beside tests/ and benchmarks/, so that both
import it as `testing` (conftest files are not imported). Not part of the workerpool distribution.

The fixtures are a plugin, testing.fixtures, loaded by tests/conftest.py and benchmarks/conftest.py.
The helpers are re-exported here: `from testing import drain, queue_counts`.
"""

from testing.constants import API_KEY, APP_ID, PRODUCTS, ROOT
from testing.index import assert_index_matches, expected_records, queue_counts, spill_all
from testing.pg import EMBEDDED_SWITCH, embedded_server, with_dbname
from testing.processes import Pool, drain, run_cli, wait_until, workerpool_cmd

__all__ = [
    "API_KEY",
    "APP_ID",
    "EMBEDDED_SWITCH",
    "PRODUCTS",
    "ROOT",
    "Pool",
    "assert_index_matches",
    "drain",
    "embedded_server",
    "expected_records",
    "queue_counts",
    "run_cli",
    "spill_all",
    "wait_until",
    "with_dbname",
    "workerpool_cmd",
]
