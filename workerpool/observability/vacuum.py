"""Vacuum health of the queue's hot tables, and what holds the xmin horizon back.

A Postgres queue writes a dead row version for every claim and every acknowledgement. Vacuum removes
them only once no snapshot can still see them: one long transaction, a prepared transaction or a
replication slot (a standby with `hot_standby_feedback`) anywhere in reach holds that horizon back,
the dead versions pile up and claims slow down. `collect` reads, in a few catalog queries, each hot
table's size, live and dead tuples and last (auto)vacuum, and the oldest holder of the horizon, and
turns them into warnings. `stats`, `/healthz` and `/metrics` show the same `VacuumHealth`.

Which holders count: for these tables (ordinary tables of this database) Postgres keeps a dead version
while any transaction *of this database* may still see it, while any replication slot's `xmin` is older,
or while a WAL sender without a slot reports an older one. A logical slot's `catalog_xmin` holds back
only system catalogs: it is listed (`blocks_hot_tables` false) but never blamed for dead tuples here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from workerpool.db.queries import Q

# The log is a view: its rows live in algolia_sync_log_batches (one per acknowledgement or release call).
HOT_TABLES = ("algolia_sync_queue", "algolia_sync_inbox", "algolia_sync_hashes", "algolia_sync_log_batches")
DEFAULT_DEAD_RATIO = 5.0
DEFAULT_MIN_DEAD = 10_000
DEFAULT_HORIZON_SECONDS = 300


@dataclass(frozen=True)
class TableHealth:
    """One hot table, from pg_stat_user_tables (tuple counts are the statistics system's estimates)."""

    table: str
    size_bytes: int  # heap, indexes and TOAST
    live_tuples: int
    dead_tuples: int
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    vacuum_count: int
    autovacuum_count: int


@dataclass(frozen=True)
class HorizonHolder:
    """Something that holds the xmin horizon back.

    kind: `transaction` (a session's open transaction or snapshot), `prepared_transaction`,
    `replication_slot`, or `walsender` (a standby streaming without a slot, with hot_standby_feedback).
    age_s is known for transactions (since the transaction began) and prepared transactions (since
    PREPARE); a slot or WAL sender only says how many transactions behind it is (age_xids).
    """

    kind: str
    age_xids: int
    age_s: float | None = None
    blocks_hot_tables: bool = True
    pid: int | None = None
    state: str | None = None
    application_name: str | None = None
    user: str | None = None
    name: str | None = None  # the slot's name or the prepared transaction's gid
    slot_type: str | None = None
    active: bool | None = None

    def describe(self) -> str:
        """One phrase naming the holder, for a warning line."""
        if self.kind == "transaction":
            who = f"pid {self.pid}"
            if self.application_name:
                who += f" ({self.application_name})"
            return f"transaction of {who}, {self.state or 'unknown state'}, open {self.age_s or 0:.0f}s"
        if self.kind == "prepared_transaction":
            return (
                f"prepared transaction {self.name!r}, prepared {self.age_s or 0:.0f}s ago (COMMIT/ROLLBACK PREPARED it)"
            )
        if self.kind == "replication_slot":
            active = "active" if self.active else "inactive"
            return f"{active} {self.slot_type} replication slot {self.name!r}, {self.age_xids} transactions behind"
        return f"WAL sender pid {self.pid} ({self.application_name or 'standby'}), {self.age_xids} transactions behind"


@dataclass(frozen=True)
class VacuumHealth:
    """The hot tables and the horizon, with the warnings they call for (empty when all is well)."""

    autovacuum: bool  # the server-wide switch
    tables: list[TableHealth]
    horizon: HorizonHolder | None  # the oldest holder that keeps dead versions of the hot tables
    holders: list[HorizonHolder] = field(default_factory=list)  # every holder older than a few seconds, oldest first
    warnings: list[str] = field(default_factory=list)

    @property
    def horizon_age_s(self) -> float:
        """Age in seconds of the oldest holder whose age in time is known (0 when none)."""
        return max((h.age_s or 0.0 for h in self.holders if h.blocks_hot_tables), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (timestamps as ISO 8601 strings)."""
        out = asdict(self)
        for t in out["tables"]:
            for key in ("last_vacuum", "last_autovacuum"):
                t[key] = t[key].isoformat() if t[key] else None
        out["horizon_age_s"] = round(self.horizon_age_s, 1)
        return out


@dataclass(frozen=True)
class Thresholds:
    """When to warn: dead tuples above `dead_ratio` x live ones (and at least `min_dead`), or a horizon
    holder older than `horizon_s` seconds."""

    dead_ratio: float = DEFAULT_DEAD_RATIO
    min_dead: int = DEFAULT_MIN_DEAD
    horizon_s: float = DEFAULT_HORIZON_SECONDS

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(
            float(settings.vacuum_warn_dead_ratio),
            int(settings.vacuum_warn_min_dead),
            float(settings.vacuum_warn_horizon_seconds),
        )


def collect(conn: psycopg.Connection, thresholds: Thresholds | None = None) -> VacuumHealth:
    """Read the hot tables' statistics and the horizon's holders; a few catalog queries, no locks."""
    limits = thresholds or Thresholds()
    rows = conn.execute(Q.vacuum_tables, (list(HOT_TABLES),)).fetchall()
    autovacuum = bool(rows[0][0]) if rows else True
    tables = [TableHealth(*row[1:]) for row in rows]
    holders = [
        HorizonHolder(
            kind=r[0],
            age_xids=int(r[1] or 0),
            age_s=None if r[2] is None else round(r[2], 1),
            blocks_hot_tables=bool(r[3]),
            pid=r[4],
            state=r[5],
            application_name=r[6] or None,
            user=r[7],
            name=r[8],
            slot_type=r[9],
            active=r[10],
        )
        for r in conn.execute(Q.vacuum_horizon).fetchall()
    ]
    horizon = next((h for h in holders if h.blocks_hot_tables), None)
    return VacuumHealth(autovacuum, tables, horizon, holders, _warnings(autovacuum, tables, holders, horizon, limits))


def _warnings(
    autovacuum: bool,
    tables: list[TableHealth],
    holders: list[HorizonHolder],
    horizon: HorizonHolder | None,
    limits: Thresholds,
) -> list[str]:
    out = []
    blocker = f"; the xmin horizon is held by the {horizon.describe()}" if horizon else ""
    for t in tables:
        outgrown = t.dead_tuples >= limits.min_dead and t.dead_tuples > limits.dead_ratio * t.live_tuples
        if limits.dead_ratio > 0 and outgrown:
            cause = blocker or (
                "; autovacuum is off on this server: run VACUUM on it (README: Vacuum)"
                if not autovacuum
                else "; autovacuum has not caught up yet"
            )
            out.append(
                f"{t.table} has {t.dead_tuples} dead tuples for {t.live_tuples} live ones "
                f"(VACUUM_WARN_DEAD_RATIO={limits.dead_ratio:g}){cause}"
            )
    for h in holders:
        if h.blocks_hot_tables and h.age_s is not None and limits.horizon_s > 0 and h.age_s > limits.horizon_s:
            out.append(
                f"the xmin horizon is held back by the {h.describe()} "
                f"(VACUUM_WARN_HORIZON_SECONDS={limits.horizon_s:g}): vacuum cannot remove dead tuples"
            )
    return out


def prometheus_families(health: VacuumHealth) -> Any:
    """The hot tables' size and tuples, and the xmin horizon's age and holder (names alert rules use)."""
    from prometheus_client.core import GaugeMetricFamily

    families = {
        "size_bytes": GaugeMetricFamily(
            "workerpool_table_size_bytes", "Size of a hot table with its indexes and TOAST", labels=["table"]
        ),
        "live_tuples": GaugeMetricFamily(
            "workerpool_table_live_tuples", "Live tuples of a hot table (statistics estimate)", labels=["table"]
        ),
        "dead_tuples": GaugeMetricFamily(
            "workerpool_table_dead_tuples",
            "Dead tuples of a hot table waiting for vacuum (statistics estimate)",
            labels=["table"],
        ),
    }
    for t in health.tables:
        for name, family in families.items():
            family.add_metric([t.table], getattr(t, name))
    yield from families.values()
    yield GaugeMetricFamily(
        "workerpool_xmin_horizon_age_seconds",
        "Age of the oldest transaction or prepared transaction holding the xmin horizon "
        "back for the hot tables (0: none)",
        value=health.horizon_age_s,
    )
    yield GaugeMetricFamily(
        "workerpool_xmin_horizon_age_xids",
        "How many transactions behind the oldest holder of the hot tables' xmin horizon "
        "is (any kind, replication slots included; 0: none)",
        value=health.horizon.age_xids if health.horizon else 0,
    )
    holder = GaugeMetricFamily(
        "workerpool_xmin_horizon_holder",
        "Transactions behind, of each holder of the xmin horizon: kind, holder (slot or prepared "
        "transaction name), pid, application, and what it holds back (tables, or catalog only)",
        labels=["kind", "holder", "pid", "application", "holds"],
    )
    for h in health.holders[:10]:
        holder.add_metric(
            [
                h.kind,
                h.name or "",
                str(h.pid or ""),
                h.application_name or "",
                "tables" if h.blocks_hot_tables else "catalog",
            ],
            h.age_xids,
        )
    yield holder
    yield GaugeMetricFamily(
        "workerpool_vacuum_warnings", "Vacuum warnings /healthz currently shows", value=len(health.warnings)
    )
