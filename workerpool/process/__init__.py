"""The process model: the supervisor, its workers and their loop, built on the public API's services."""
