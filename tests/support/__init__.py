"""What the tests and benchmarks share, importable as `tests.support` (conftest files are not imported).

The fixtures are a plugin, tests.support.fixtures, loaded by tests/conftest.py and benchmarks/conftest.py.
The helpers are re-exported here: `from tests.support import drain, queue_counts`.
"""

from tests.support.constants import API_KEY, APP_ID, PRODUCTS, ROOT
from tests.support.index import assert_index_matches, expected_records, queue_counts, spill_all
from tests.support.pg import EMBEDDED_SWITCH, embedded_server, with_dbname
from tests.support.processes import Pool, drain, run_cli, wait_until, workerpool_cmd

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
