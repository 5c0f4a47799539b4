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


class JSONText(TypeDecorator):
    """jsonb on PostgreSQL; JSON text on SQLite.

    Not ``JSON().with_variant(JSONB(), "postgresql")``: that imports the
    PostgreSQL dialect (and its asyncpg module) on every run, SQLite's too
    (tests/test_startup.py). The dialect is imported here only when a
    PostgreSQL engine asks, and it has loaded it already.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=self.impl.none_as_null))
        return dialect.type_descriptor(self.impl)


RawJSON = JSONText()
# The same, with Python None stored as SQL NULL rather than the JSON text null.
ExtraJSON = JSONText(none_as_null=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# Every table, column and (in leansync.read) view carries its description as
# a comment: migration 0004 puts them on PostgreSQL, `datasette-metadata`
# hands them to Datasette, and tests/test_comments.py checks that they are
# docs/schema.md's words (its rule: backticks and link targets dropped).
API_FIELD_COMMENTS = {
    "name": "API field name.",
    "description": "API field description.",
    "ref": "API field ref.",
    "lean_hash": "API field leanHash: the LEAN commit. Several ids may share one hash.",
    "lean_cloud_hash": "API field leanCloudHash.",
    "public": "API field public (the API sends a boolean or 0/1).",
    "created": "API field created, in UTC.",
}
STATE_FIELD_COMMENT = "The API field, in this state (see the same column of lean_version)."


def _api_columns(*, state: bool = False) -> list[Column]:
    """The seven API fields, in the order used by ``changed_fields``; ``state``: as a history row holds them."""
    types = {"public": Boolean, "created": UTCDateTime}
    return [Column(name, types.get(name, Text), comment=STATE_FIELD_COMMENT if state else comment)
            for name, comment in API_FIELD_COMMENTS.items()]


def _count(name: str, comment: str) -> Column:
    return Column(name, Integer, nullable=False, server_default=text("0"), comment=comment)


sync_run = Table(
    "sync_run",
    metadata,
    Column("id", Integer, primary_key=True, comment="Run id, increasing in commit order."),
    Column("started_at", UTCDateTime, nullable=False,
           comment="When the run started (after it took the lock); the timestamp of every row it wrote. Always "
                   "later than every earlier run's: if the clock stepped back, it is the newest run's plus one "
                   "microsecond."),
    Column("finished_at", UTCDateTime, comment="When it committed, or failed."),
    Column("status", Text, nullable=False,
           comment="success or failed. A run killed before it commits leaves no row."),
    Column("source", Text, nullable=False,
           comment="The API URL or the file path (stdin for -). Never a credential."),
    _count("versions_seen", "Versions in the response."),
    _count("inserted", "Versions listed for the first time."),
    _count("updated", "Listed versions that opened a new state: a modelled field or another key changed."),
    _count("unchanged", "Listed versions whose whole object is unchanged, up to spelling (key order, spacing, "
                        "created's format, 1 for true): such a re-spelling refreshes raw and raw_digest and still "
                        "counts here."),
    _count("removed", "Versions no longer listed."),
    _count("restored", "Versions listed again after a removal (not counted as inserted, even if their fields "
                       "changed)."),
    _count("new_hashes", "Rows added to lean_hash."),
    Column("error", Text, comment="For a failed run, the error message."),
    Index("ix_sync_run_started_at", "started_at"),
    comment="One row per run that got past the lock.",
)

lean_version = Table(
    "lean_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False,
           comment="The API's version id (a LEAN release tag number), not generated here."),
    *_api_columns(),
    Column("first_seen_at", UTCDateTime, nullable=False,
           comment="Start of the run that first listed the version."),
    Column("updated_at", UTCDateTime, nullable=False,
           comment="Start of the run that last opened a new state of the version (a change of any kind, a return "
                   "after removal included): the valid_from of its newest lean_version_history row. Equals "
                   "first_seen_at until then."),
    Column("removed_at", UTCDateTime,
           comment="Set by the run that found the version no longer listed; cleared when it returns."),
    Column("raw", RawJSON, nullable=False,
           comment="The last JSON object the API sent for the version, unknown fields included (JSON-equal to what "
                   "was sent: PostgreSQL's jsonb keeps neither key order nor whitespace)."),
    # payload.digest of the item as sent; NULL: compare by decoding
    Column("raw_digest", Text,
           comment="The hex BLAKE2b-128 digest of the object's bytes exactly as the API sent them (see Skipping what "
                   "did not change). Null until a run has seen the version since migration 0003."),
    comment="One row per version id ever listed.",
)

lean_hash = Table(
    "lean_hash",
    metadata,
    Column("kind", Text, primary_key=True, comment="lean (from leanHash) or lean_cloud (from leanCloudHash)."),
    Column("hash", Text, primary_key=True, comment="The hash."),
    Column("first_seen_at", UTCDateTime, nullable=False, comment="Start of the run that first saw it."),
    Column("first_version_id", Integer, nullable=False, comment="The lowest version id carrying it in that run."),
    Column("sync_run_id", Integer, ForeignKey("sync_run.id"), nullable=False,
           comment="The sync_run that first saw it."),
    comment="One row per distinct commit hash.",
)

lean_version_history = Table(
    "lean_version_history",
    metadata,
    Column("id", Integer, primary_key=True, comment="Row id."),
    Column("version_id", Integer, ForeignKey("lean_version.id"), nullable=False,
           comment="The lean_version.id this state belongs to."),
    *_api_columns(state=True),
    Column("valid_from", UTCDateTime, nullable=False,
           comment="Start of the run that observed this state first."),
    Column("valid_to", UTCDateTime,
           comment="Start of the run that changed or removed it; null while current."),
    Column("changed_fields", Text,
           comment="What differs from the version's previous state (for a return after removal: the state before "
                   "removal), comma-separated: the modelled lean_version column names in table order, then the other "
                   "keys added, removed or changed, by their JSON key in plain string order (code point order: Z "
                   "before a). Example: public,deprecated. Null on a version's first row, and on a return with "
                   "nothing changed."),
    Column("sync_run_id", Integer, ForeignKey("sync_run.id"), nullable=False,
           comment="The sync_run that opened this row."),
    # the state's keys other than "id" and the seven; NULL when none
    Column("extra", ExtraJSON,
           comment="The state's keys other than id and the seven API fields, as the API sent them (JSON-equal); SQL "
                   "NULL, not the JSON null, when there are none. A key sent as null is present: {\"k\": null}. The "
                   "seven columns plus extra are the state's whole object. Migration 0003 filled it for the rows "
                   "open then, from lean_version.raw; rows closed before it have NULL, because those keys were never"
                   " kept. A version removed before 0003 that returns is still compared in full: the run compares "
                   "with the other keys of lean_version.raw, which kept them."),
    Index("ix_lean_version_history_version_id_valid_from", "version_id", "valid_from"),
    # At most one open (current) row per version, enforced by the database
    # (partial on PostgreSQL too: see add_postgresql_options).
    Index(
        "uq_lean_version_history_open",
        "version_id",
        unique=True,
        sqlite_where=text("valid_to IS NULL"),
    ),
    comment="One row per state of a version.",
)

# The outbox of notifications (leansync.outputs.notify.outbox): written with
# the run, updated by deliveries after its commit.
NOTIFICATION_STATUSES = ("pending", "sent", "abandoned")

notification = Table(
    "notification",
    metadata,
    Column("id", Integer, primary_key=True, comment="Row id."),
    Column("sync_run_id", Integer, ForeignKey("sync_run.id"), nullable=False,
           comment="The sync_run whose news this is."),
    Column("target_label", Text, nullable=False,
           comment="The target as scheme://host[:port], without credentials, path or query (the name shown in "
                   "warnings and leansync runs)."),
    Column("target_key", Text, nullable=False,
           comment="The target's identity: the hex HMAC-SHA256 of its URL under leansync's fixed key, never the "
                   "URL. It matches pending rows to the targets configured now."),
    Column("status", Text, nullable=False,
           comment="pending (not delivered yet), sent (the target accepted it) or abandoned (never to be sent: "
                   "too old, or its target is no longer configured)."),
    _count("attempts", "Delivery attempts made so far."),
    Column("last_error", Text,
           comment="The last failure in one line, secrets masked; for an abandoned row, why it was abandoned."),
    Column("created_at", UTCDateTime, nullable=False, comment="The started_at of the run that wrote it."),
    Column("last_attempt_at", UTCDateTime,
           comment="When the last delivery attempt started, or when the row was abandoned; null before either."),
    Column("sent_at", UTCDateTime, comment="When the target accepted it; null unless sent."),
    Index("uq_notification_sync_run_id_target_key", "sync_run_id", "target_key", unique=True),
    Index("ix_notification_status_sync_run_id", "status", "sync_run_id"),
    comment="One row per run and notification target.",
)

# Column names of the seven API fields, in table order.
API_FIELDS: tuple[str, ...] = tuple(c.name for c in _api_columns())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def add_postgresql_options() -> None:
    """Give the open-row index its PostgreSQL ``WHERE`` (migration 0001 creates it so).

    Called when a PostgreSQL engine is made (leansync.store.database): naming
    a PostgreSQL option in a table imports the PostgreSQL dialect, asyncpg's
    module included, and that would cost every SQLite run (tests/test_startup.py).
    """
    index = next(i for i in lean_version_history.indexes if i.name == "uq_lean_version_history_open")
    if index.dialect_options["postgresql"]["where"] is None:
        index.dialect_options["postgresql"]["where"] = text("valid_to IS NULL")
