"""Registers the suite's fixtures (tests.support.fixtures); the helpers are in tests.support.

Layers: tests/unit (pure code: no Postgres, no processes), tests/integration (the SQL contract on a
real Postgres, called directly), tests/acceptance (real `workerpool` processes, Postgres and the
emulator over HTTP).
"""

pytest_plugins = ["tests.support.fixtures"]
