"""The database schema as SQLAlchemy Core tables.

This is a public interface: people write SQL against it. Change it only
through a new Alembic migration (a test checks that models and migrations
agree) and document every column in docs/schema.md.
"""

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """A timestamp that is always UTC and always timezone-aware in Python.

    PostgreSQL stores ``timestamp with time zone``; SQLite stores the UTC
    wall time as text (``YYYY-MM-DD HH:MM:SS.ffffff``), which sorts and
    compares correctly as a string.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("leansync only stores timezone-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# jsonb on PostgreSQL; JSON text on SQLite.
RawJSON = JSON().with_variant(JSONB(), "postgresql")
# The same, with Python None stored as SQL NULL rather than the JSON text null.
ExtraJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _api_columns() -> list[Column]:
    """The seven API fields, in the order used by ``changed_fields``."""
    return [
        Column("name", Text),
        Column("description", Text),
        Column("ref", Text),
        Column("lean_hash", Text),
        Column("lean_cloud_hash", Text),
        Column("public", Boolean),
        Column("created", UTCDateTime),
    ]


sync_run = Table(
    "sync_run",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("versions_seen", Integer, nullable=False, server_default=text("0")),
    Column("inserted", Integer, nullable=False, server_default=text("0")),
    Column("updated", Integer, nullable=False, server_default=text("0")),
    Column("unchanged", Integer, nullable=False, server_default=text("0")),
    Column("removed", Integer, nullable=False, server_default=text("0")),
    Column("restored", Integer, nullable=False, server_default=text("0")),
    Column("new_hashes", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Index("ix_sync_run_started_at", "started_at"),
)

lean_version = Table(
    "lean_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    *_api_columns(),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),
    Column("raw", RawJSON, nullable=False),
    Column("raw_digest", Text),  # payload.digest of the item as sent; NULL: compare by decoding
)

lean_hash = Table(
    "lean_hash",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("hash", Text, primary_key=True),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("first_version_id", Integer, nullable=False),
    Column("sync_run_id", Integer, ForeignKey("sync_run.id"), nullable=False),
)

lean_version_history = Table(
    "lean_version_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("lean_version.id"), nullable=False),
    *_api_columns(),
    Column("valid_from", UTCDateTime, nullable=False),
    Column("valid_to", UTCDateTime),
    Column("changed_fields", Text),
    Column("sync_run_id", Integer, ForeignKey("sync_run.id"), nullable=False),
    Column("extra", ExtraJSON),  # the state's keys other than "id" and the seven; NULL when none
    Index("ix_lean_version_history_version_id_valid_from", "version_id", "valid_from"),
    # At most one open (current) row per version, enforced by the database.
    Index(
        "uq_lean_version_history_open",
        "version_id",
        unique=True,
        sqlite_where=text("valid_to IS NULL"),
        postgresql_where=text("valid_to IS NULL"),
    ),
)

# Column names of the seven API fields, in table order.
API_FIELDS: tuple[str, ...] = tuple(c.name for c in _api_columns())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
