"""Exact, write-light history: lean_version_history.extra, lean_version.raw_digest, no last_seen_at.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- lean_version_history.extra keeps each state's keys other than "id" and the
  seven modelled fields (SQL NULL when there are none). Open rows are filled
  from lean_version.raw; closed rows get NULL: that was never kept.
- lean_version.raw_digest (the digest of the item as sent) lets a run skip
  unchanged items without decoding them; NULL after this migration, so the
  next run decodes every item once and fills it.
- lean_version.last_seen_at goes: writing it rewrote every listed row on
  every run. lean_version_current computes it from sync_run instead.
- updated_at becomes the valid_from of the version's newest history row.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Spelled out, not imported from leansync: a migration keeps its meaning.
TS = sa.DateTime(timezone=True)
RAW = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
EXTRA = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
MODELLED_KEYS = ("id", "name", "description", "ref", "leanHash", "leanCloudHash", "public", "created")
API_COLUMNS = ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")

NEWEST_SUCCESS = "(SELECT MAX(r.started_at) FROM sync_run r WHERE r.status = 'success')"

LEAN_VERSION_CURRENT_0003 = f"""
CREATE VIEW lean_version_current AS
SELECT v.id, v.name, v.description, v.ref, v.lean_hash, v.lean_cloud_hash, v.public, v.created,
       v.first_seen_at, {NEWEST_SUCCESS} AS last_seen_at, v.updated_at, v.raw
FROM lean_version v
WHERE v.removed_at IS NULL
"""

# As migration 0002 created it.
LEAN_VERSION_CURRENT_0002 = """
CREATE VIEW lean_version_current AS
SELECT id, name, description, ref, lean_hash, lean_cloud_hash, public, created,
       first_seen_at, last_seen_at, updated_at, raw
FROM lean_version
WHERE removed_at IS NULL
"""

# What last_seen_at meant: the newest successful run while the version was listed.
LAST_SEEN = (
    "(SELECT MAX(r.started_at) FROM sync_run r WHERE r.status = 'success' "
    "AND (lean_version.removed_at IS NULL OR r.started_at < lean_version.removed_at))"
)


def _version_columns(*, last_seen: bool) -> list[sa.Column]:
    """lean_version's columns at 0002 (last_seen) or at 0003, in table order."""
    columns = [
        sa.Column("id", sa.Integer(), autoincrement=False),
        sa.Column("name", sa.Text()),
        sa.Column("description", sa.Text()),
        sa.Column("ref", sa.Text()),
        sa.Column("lean_hash", sa.Text()),
        sa.Column("lean_cloud_hash", sa.Text()),
        sa.Column("public", sa.Boolean()),
        sa.Column("created", TS),
        sa.Column("first_seen_at", TS, nullable=False),
    ]
    if last_seen:
        columns.append(sa.Column("last_seen_at", TS, nullable=False))
    columns += [
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("removed_at", TS),
        sa.Column("raw", RAW, nullable=False),
    ]
    if not last_seen:
        columns.append(sa.Column("raw_digest", sa.Text()))
    return columns


def _rebuild_sqlite_lean_version(*, last_seen: bool, values: dict[str, str]) -> None:
    """Recreate lean_version with the columns of one revision (SQLite cannot drop a
    NOT NULL column or add one without a default before 3.35).

    lean_version_history references lean_version, and foreign keys are on inside
    the transaction: with the checks deferred to the commit, the rows dropped
    with the old table are found again in the new one by then. ALTER TABLE
    RENAME is not used, because it would rewrite the child's reference.
    """
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute("CREATE TEMP TABLE lean_version_0003 AS SELECT * FROM lean_version")
    op.execute("DROP TABLE lean_version")
    columns = _version_columns(last_seen=last_seen)
    op.create_table("lean_version", *columns, sa.PrimaryKeyConstraint("id", name="pk_lean_version"))
    names = [c.name for c in columns]
    selected = ", ".join(values.get(name, name) for name in names)
    op.execute(f"INSERT INTO lean_version ({', '.join(names)}) SELECT {selected} FROM lean_version_0003 lean_version")
    op.execute("DROP TABLE lean_version_0003")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW lean_version_current")

    # updated_at: the start of the run that opened the version's newest state.
    op.execute(
        "UPDATE lean_version SET updated_at = COALESCE((SELECT MAX(h.valid_from) FROM lean_version_history h "
        "WHERE h.version_id = lean_version.id), updated_at)"
    )
    if sqlite:
        _rebuild_sqlite_lean_version(last_seen=False, values={"raw_digest": "NULL"})
    else:
        op.drop_column("lean_version", "last_seen_at")
        op.add_column("lean_version", sa.Column("raw_digest", sa.Text()))

    op.add_column("lean_version_history", sa.Column("extra", EXTRA))
    # The open rows' other keys, from the stored object; NULL when there are none.
    if sqlite:
        paths = ", ".join(f"'$.{key}'" for key in MODELLED_KEYS)
        op.execute(
            f"UPDATE lean_version_history SET extra = (SELECT NULLIF(json_remove(v.raw, {paths}), '{{}}') "
            "FROM lean_version v WHERE v.id = lean_version_history.version_id) WHERE valid_to IS NULL"
        )
    else:
        keys = ", ".join(f"'{key}'" for key in MODELLED_KEYS)
        op.execute(
            f"UPDATE lean_version_history h SET extra = NULLIF(v.raw - ARRAY[{keys}]::text[], '{{}}'::jsonb) "
            "FROM lean_version v WHERE v.id = h.version_id AND h.valid_to IS NULL"
        )
    op.execute(LEAN_VERSION_CURRENT_0003)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW lean_version_current")
    op.drop_column("lean_version_history", "extra")  # SQLite 3.35+: ALTER TABLE DROP COLUMN
    if sqlite:
        _rebuild_sqlite_lean_version(last_seen=True, values={"last_seen_at": f"COALESCE({LAST_SEEN}, updated_at)"})
    else:
        op.add_column("lean_version", sa.Column("last_seen_at", TS))
        op.execute(f"UPDATE lean_version SET last_seen_at = COALESCE({LAST_SEEN}, updated_at)")
        op.alter_column("lean_version", "last_seen_at", nullable=False)
        op.drop_column("lean_version", "raw_digest")
    op.execute(LEAN_VERSION_CURRENT_0002)
