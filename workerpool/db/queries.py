"""Every statement workerpool runs, by name: the blocks of `sql/queries.sql`, loaded once at import.
(The demo's own statements are `ops/demo.sql`, read the same way by `ops/demo.py`.)

A block starts with a `-- name: claim_batch` line; the comment lines right after it describe it, and
the rest, up to the next block, is the statement (one trailing semicolon dropped; comment lines
after it head the next section). Parameters are
psycopg's (`%s`, `%(name)s`). A block with `{placeholders}` is a template for psycopg.sql: its caller
fills in identifiers with `sql.SQL(Q.name).format(...)`, so no identifier is ever pasted in as text.

`Q` has one typed attribute per block, so a misspelt name fails type checking, and the file and this
class are checked against each other at import: a block without an attribute, or an attribute
without a block, is an error before anything runs.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import ClassVar, Final

# The channel every capture NOTIFYs and every worker LISTENs on; schema.sql's algolia_sync_channel()
# returns the same name (tests/integration/test_schema.py checks it).
NOTIFY_CHANNEL: Final = "algolia_sync"

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str, source: str = "queries.sql") -> dict[str, str]:
    """The named blocks of a queries file (`source` names it in errors): name -> statement, in file order."""
    found: dict[str, str] = {}
    marks = list(_NAME.finditer(text))
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        name = mark.group(1)
        if name in found:
            raise ValueError(f"{source} names {name!r} twice")
        body = text[mark.end() : following.start() if following else len(text)].strip("\n").splitlines()
        while body and (body[0].startswith("--") or not body[0].strip()):
            body.pop(0)  # the block's description
        while body and (body[-1].startswith("--") or not body[-1].strip()):
            body.pop()  # the next section's heading
        statement = "\n".join(body).strip()
        found[name] = statement[:-1].rstrip() if statement.endswith(";") else statement
        if not found[name]:
            raise ValueError(f"{source}: block {name!r} has no statement")
    return found


class Statements:
    """Named statements as typed attributes: a subclass declares one `name: str` per block of its file
    (`FILE`), and the two are checked against each other when it is made."""

    FILE: ClassVar[str]

    def __init__(self, statements: dict[str, str]) -> None:
        declared = {name for name in type(self).__annotations__ if name != "FILE"}
        missing = sorted(declared - set(statements))
        extra = sorted(set(statements) - declared)
        if missing or extra:
            raise ValueError(
                f"{self.FILE} and {type(self).__name__} disagree: blocks missing {missing}, blocks not declared {extra}"
            )
        for name, statement in statements.items():
            setattr(self, name, statement)


class Queries(Statements):
    """The statements of queries.sql as attributes (see the module's docstring)."""

    FILE = "queries.sql"

    # capture: registrations and triggers
    resolve_relation: str
    load_watched: str
    key_type: str
    key_nullable: str
    table_columns: str
    primary_key: str
    is_unique: str
    register: str
    capture_function_name: str
    create_capture: str
    attach_capture: str
    detach_capture: str
    drop_capture_function: str
    renamed_registration: str
    drop_superseded_pending: str
    rename_queue_rows: str
    rename_inbox_rows: str
    delete_registration_by_old_name: str
    watched_indices: str
    registrations_to_refresh: str
    set_transform: str
    registrations_by_relation: str
    regclass_oid: str
    delete_registration: str
    delete_unfailed_queue_rows: str
    delete_inbox_rows: str
    unindexed_related: str
    insert_related: str
    create_related_triggers: str
    delete_related: str
    relation_exists: str
    drop_trigger: str
    # queue
    claim_batch: str
    enqueue: str
    spill: str
    idle: str
    extend_lease: str
    ack: str
    release: str
    recover_expired: str
    heartbeat: str
    forget_worker: str
    # worker
    schema_installed: str
    listen: str
    load_rows: str
    load_rows_one_by_one: str
    retention_lock: str
    record_published: str
    prune_log: str
    # ops
    migration_lock: str
    create_migrations_table: str
    migrations_table_exists: str
    applied_migrations: str
    record_migration: str
    retry_failed: str
    over_long_failed: str
    cleanup_old_sync_records: str
    lock_table_for_unwatch: str
    notify: str
    take_reindex_lease: str
    renew_reindex_lease: str
    drop_reindex_lease: str
    load_reindex_progress: str
    start_reindex_progress: str
    advance_reindex_progress: str
    finish_reindex_progress: str
    keys_to_reenqueue: str
    first_keys: str
    keys_after: str
    count_keyed_rows: str
    stats_tables: str
    stats_workers: str
    tables_with_queue_rows: str
    backlog: str
    index_settings: str
    database_now: str
    create_verify_scratch: str
    drop_verify_scratch: str
    copy_hashes: str
    analyze_verify_hashes: str
    create_drift: str
    drop_in_flight_drift: str
    index_drift: str
    count_drift: str
    sample_drift: str
    drift_after: str
    castable_keys: str
    cast_key: str
    mark_impossible_drift: str
    # observability
    health_backlog: str
    health_queue_depth: str
    health_oldest_pending: str
    vacuum_tables: str
    vacuum_horizon: str
    overview_snapshot: str
    overview_clock: str
    overview_registrations: str
    overview_queue: str
    overview_minutes: str
    overview_lag: str
    overview_failed: str
    overview_workers: str
    overview_reindex: str
    # the public API
    key_text_is_pinned: str
    current_setting: str
    set_local_config: str
    canonical_keys: str
    # roles and privileges
    install_schema: str
    untrusted_creators: str
    pin_session_path: str
    pin_search_paths: str
    role_info: str
    create_worker_role: str
    grant_worker: str
    worker_search_path: str
    worker_roles: str
    current_role_info: str
    grant_select: str
    resolve_relation_name: str
    failed_since: str
    local_statement_timeout: str


def load() -> Queries:
    """Read and check `sql/queries.sql` (in the package: `workerpool/db/sql/queries.sql`)."""
    return Queries(parse((resources.files("workerpool.db") / "sql" / "queries.sql").read_text()))


Q: Final = load()
