"""The implementation behind workerpool's public Python API.

Import the public names from `workerpool` itself (`from workerpool import DatabaseService`); the
modules here are private and may change.
"""
