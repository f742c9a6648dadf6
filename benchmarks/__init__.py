"""Benchmarks for workerpool (see benchmarks/README.md). Not part of the normal test run.

This file makes `benchmarks` a package, so pytest puts the repository root on sys.path and
`benchmarks/conftest.py` can load the fixtures it shares with the tests (the top-level `testing`
package, testing.fixtures) as a plugin, whatever the working directory.
"""
