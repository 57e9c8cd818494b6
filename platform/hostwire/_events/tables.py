"""The outbox's tables (SQLAlchemy Core), their schema version and its upgrades.

``hostwire_schema`` holds one version number:

- 1: ``hostwire_events`` and ``hostwire_deliveries``;
- 2: deliveries gain ``claimed_by`` and ``lease_until``, the claim of the
  process delivering them on PostgreSQL (both NULL when nobody holds one),
  and PostgreSQL gets partial indexes on pending and on leased deliveries.

``prepare`` creates what is missing and upgrades in place: a version 1
outbox (or one of the hostwire before ``hostwire_schema``) keeps its rows.
Processes starting at once on PostgreSQL take turns (an advisory lock).

``hostwire_rate_limits`` (the HTTP hooks' shared rate limits, ``ratelimit``)
is outside that version: it holds only counters of the current windows, and
the rate limiter creates it when it is missing (``rate_limit_metadata``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateIndex, CreateTable

STATES = ("pending", "delivered", "dead")
SCHEMA_VERSION = 2

# SQLite's rowid alias must be spelled INTEGER; AUTOINCREMENT never reuses a
# pruned seq, so a newer event always sorts after an older one.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()
events = Table(
    "hostwire_events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("chain", Text, nullable=False, server_default="[]"),
    Column("created_at", Double, nullable=False),
    sqlite_autoincrement=True,
)
deliveries = Table(
    "hostwire_deliveries",
    metadata,
    Column("event_seq", _SEQ, ForeignKey(events.c.seq), primary_key=True, autoincrement=False),
    Column("plugin", Text, primary_key=True),
    Column("export", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", Text),
    Column("delivered_at", Double),
    # Version 2: who holds the delivery (an Outbox's owner id) and until when.
    Column("claimed_by", Text),
    Column("lease_until", Double),
    Index("hostwire_deliveries_due", "plugin", "state", "next_attempt_at"),
    Index("hostwire_deliveries_subject", "plugin", "subject", "state", "event_seq"),
)
schema = Table("hostwire_schema", metadata, Column("version", Integer, nullable=False))
# One fixed-window counter per plug-in, key and window (``ratelimit``); the
# window's start in seconds since the epoch, the same float in every process.
rate_limit_metadata = MetaData()
rate_limits = Table(
    "hostwire_rate_limits",
    rate_limit_metadata,
    Column("plugin", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("window_start", Double, primary_key=True),
    Column("count", BigInteger, nullable=False),
)
# PostgreSQL's claims (``claims``) look only at pending rows and at leased
# ones: partial indexes keep them as fast with a million delivered rows as
# with none. (SQLite, one process, does without.)
POSTGRESQL_INDEXES = (
    "CREATE INDEX IF NOT EXISTS hostwire_deliveries_pending"
    " ON hostwire_deliveries (plugin, event_seq) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS hostwire_deliveries_leased"
    " ON hostwire_deliveries (plugin, subject) WHERE lease_until IS NOT NULL",
)

# The columns each version added to a table that an earlier one made.
_ADDED = {2: (deliveries.c.claimed_by, deliveries.c.lease_until)}
# Two processes creating or upgrading the tables at once wait for each other (PostgreSQL).
_SCHEMA_LOCK = 0x686F73747769  # "hostwi"


def schema_version(conn: Connection) -> int | None:
    """The outbox tables' schema version, None when they are not (all) there yet."""
    if not inspect(conn).has_table(schema.name):
        return None
    version = conn.execute(select(func.max(schema.c.version))).scalar()
    return None if version is None else int(version)


def prepare(conn: Connection) -> int:
    """Create the missing tables and upgrade older ones, in ``conn``'s transaction.

    Returns the version found or made; one newer than ``SCHEMA_VERSION`` is
    left alone (the caller refuses it).
    """
    version = schema_version(conn)
    if version is not None and version >= SCHEMA_VERSION:
        return version
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    for table in metadata.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
    # Read after the lock: another process may have done it all meanwhile.
    version = conn.execute(select(func.max(schema.c.version))).scalar()
    if version is not None and version >= SCHEMA_VERSION:
        return int(version)
    present = {c["name"] for c in inspect(conn).get_columns(deliveries.name)}
    for added in _ADDED.values():
        for column in added:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                name = column.table.name
                conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {column.name} {kind}"))
    for table in metadata.sorted_tables:
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))
    if conn.dialect.name == "postgresql":
        for statement in POSTGRESQL_INDEXES:
            conn.execute(text(statement))
    if version is None:
        conn.execute(insert(schema).values(version=SCHEMA_VERSION))
    else:
        conn.execute(update(schema).values(version=SCHEMA_VERSION))
    return SCHEMA_VERSION
