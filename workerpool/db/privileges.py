"""Roles and privileges (docs/roles.md): which roles workerpool trusts, and what the pool's role gets.

workerpool runs code as other roles: capture triggers as whoever writes a watched table, the DDL
followers as the superuser who ran `migrate`, the pool's reads as the worker role. Each of them
resolves names through workerpool's schema, so no role that workerpool does not trust may create
objects there (`check_schema_trust`, before `migrate` writes anything). The pool runs as a worker
role with exactly the grants it needs (`setup_worker_role`), which `watch` extends to each table it
registers (`grant_watched`).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from workerpool.config import ConfigError
from workerpool.db.connection import one_row
from workerpool.db.queries import Q


def install_schema(conn: psycopg.Connection) -> str:
    """The schema workerpool is installed in, or the one `migrate` would install it in."""
    row = conn.execute(Q.install_schema).fetchone()
    if row is None:
        raise ConfigError(
            "no schema to install workerpool in: the search_path of DATABASE_URL names no existing schema "
            "(create one, e.g. CREATE SCHEMA workerpool, and name it: ?options=-csearch_path%3Dworkerpool)"
        )
    schema: str = row[0]
    return schema


def check_schema_trust(conn: psycopg.Connection, schema: str) -> None:
    """Refuse a schema in which a role other than a superuser, or a role that already has every right
    of the current role (workerpool's owner), may create objects: such a role could add an overload
    of a function that workerpool's code calls, and have it run by every role that writes a watched
    table."""
    roles = [r[0] for r in conn.execute(Q.untrusted_creators, (schema,)).fetchall()]
    if roles:
        shown = ", ".join(roles[:5]) + (f" and {len(roles) - 5} more" if len(roles) > 5 else "")
        raise ConfigError(
            f"schema {schema!r} lets role(s) {shown} create objects, so workerpool's functions could run their "
            f"code; install into a schema of workerpool's own (CREATE SCHEMA workerpool; DATABASE_URL with "
            f"?options=-csearch_path%3Dworkerpool) or REVOKE CREATE ON SCHEMA {schema} FROM those roles"
        )


def pin_search_path(conn: psycopg.Connection, schema: str) -> None:
    """For the rest of the current transaction, objects are created in `schema` and names resolve
    through pg_catalog, `schema` and pg_temp only (what `SET search_path FROM CURRENT` then
    records). Transaction-scoped, so no pooler carries it to another client."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        raise RuntimeError("pin_search_path needs a transaction: a session search_path would outlive it")
    conn.execute(Q.pin_session_path, (schema,))


def setup_worker_role(conn: psycopg.Connection, role: str) -> bool:
    """Create `role` if it does not exist (LOGIN, no password), grant it what the pool needs and pin
    its search_path to pg_catalog, workerpool's schema and pg_temp; returns whether it was created.
    A superuser is refused: the pool must not run as one."""
    if not role or len(role.encode()) > 63 or role.startswith("pg_") or "\x00" in role:
        raise ConfigError(
            f"--worker-role {role!r} is not a usable role name; expected 1-63 bytes, not starting with 'pg_'"
        )
    row = conn.execute(Q.role_info, (role,)).fetchone()
    if row is not None and row[0]:
        raise ConfigError(
            f"--worker-role {role!r} is a superuser; the pool must run as a role without superuser "
            "(pick another name and workerpool creates it, or ALTER ROLE ... NOSUPERUSER)"
        )
    with conn.transaction():
        if row is None:
            conn.execute(sql.SQL(Q.create_worker_role).format(sql.Identifier(role)))
        conn.execute(Q.grant_worker, (sql.Identifier(role).as_string(conn),))
        conn.execute(
            sql.SQL(Q.worker_search_path).format(role=sql.Identifier(role), schema=sql.Identifier(install_schema(conn)))
        )
    return row is None


def grant_watched(conn: psycopg.Connection, relations: list[int]) -> None:
    """Give every worker role SELECT on a watched table and its source view (and USAGE on their
    schemas, without which a name in them cannot be looked up)."""
    for oid in relations:
        name, schema = one_row(conn.execute(Q.resolve_relation_name, (oid,)))
        for role, *_ in conn.execute(Q.worker_roles, (oid,)).fetchall():
            conn.execute(
                sql.SQL(Q.grant_select).format(
                    relation=sql.SQL(name), schema=sql.SQL(schema), role=sql.Identifier(role)
                )
            )


def pool_role_warnings(conn: psycopg.Connection, relations: list[int]) -> list[str]:
    """Warnings about the role the pool runs as, for a watched table and its source view: a
    superuser, or a role that owns what it reads, runs the owner's code (domain checks, functions in
    a view) with those rights. Without a worker role, the role running this command is taken to be
    the pool's (the same DATABASE_URL)."""
    warnings = []
    for oid in relations:
        name = one_row(conn.execute(Q.resolve_relation_name, (oid,)))[0]
        workers = conn.execute(Q.worker_roles, (oid,)).fetchall()
        for role, superuser, owner in workers:
            if superuser:
                warnings.append(f"worker role {role} is a superuser: the pool should run as a role without it")
            elif owner:
                warnings.append(
                    f"worker role {role} owns {name}: the pool should not run as the owner of what it reads"
                )
        if not workers:
            user, superuser, owner = one_row(conn.execute(Q.current_role_info, (oid,)))
            if superuser or owner:
                warnings.append(
                    f"no worker role is set up and {user} {'is a superuser' if superuser else 'owns ' + name}: "
                    "run the pool as a role of its own (workerpool migrate --worker-role NAME; docs/roles.md)"
                )
                break
    return warnings
