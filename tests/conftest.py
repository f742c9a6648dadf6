"""Registers the suite's fixtures (testing.fixtures); the helpers are in testing.

Layers: tests/unit (pure code: no Postgres, no processes), tests/integration (the SQL contract on a
real Postgres, called directly), tests/acceptance (real `workerpool` processes, Postgres and the
emulator over HTTP).
"""

pytest_plugins = ["testing.fixtures"]
