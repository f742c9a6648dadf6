"""workerpool: keeps Algolia indices in sync with PostgreSQL, coordinated by Postgres alone."""

__version__ = "0.1.0"
