"""Initial schema: lean_version, lean_hash, lean_version_history, sync_run.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Types are spelled out here, not imported from leansync.store.models: a migration
# must keep meaning what it meant when it was written.
TS = sa.DateTime(timezone=True)
RAW = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def api_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.Text()),
        sa.Column("description", sa.Text()),
        sa.Column("ref", sa.Text()),
        sa.Column("lean_hash", sa.Text()),
        sa.Column("lean_cloud_hash", sa.Text()),
        sa.Column("public", sa.Boolean()),
        sa.Column("created", TS),
    ]


def upgrade() -> None:
    op.create_table(
        "sync_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        *[
            sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))
            for name in ("versions_seen", "inserted", "updated", "unchanged", "removed", "restored", "new_hashes")
        ],
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_sync_run"),
    )
    op.create_index("ix_sync_run_started_at", "sync_run", ["started_at"])

    op.create_table(
        "lean_version",
        sa.Column("id", sa.Integer(), autoincrement=False),
        *api_columns(),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("removed_at", TS),
        sa.Column("raw", RAW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lean_version"),
    )

    op.create_table(
        "lean_hash",
        sa.Column("kind", sa.Text()),
        sa.Column("hash", sa.Text()),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("first_version_id", sa.Integer(), nullable=False),
        sa.Column("sync_run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "hash", name="pk_lean_hash"),
        sa.ForeignKeyConstraint(["sync_run_id"], ["sync_run.id"], name="fk_lean_hash_sync_run_id_sync_run"),
    )

    op.create_table(
        "lean_version_history",
        sa.Column("id", sa.Integer()),
        sa.Column("version_id", sa.Integer(), nullable=False),
        *api_columns(),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS),
        sa.Column("changed_fields", sa.Text()),
        sa.Column("sync_run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lean_version_history"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["lean_version.id"], name="fk_lean_version_history_version_id_lean_version"
        ),
        sa.ForeignKeyConstraint(
            ["sync_run_id"], ["sync_run.id"], name="fk_lean_version_history_sync_run_id_sync_run"
        ),
    )
    op.create_index(
        "ix_lean_version_history_version_id_valid_from", "lean_version_history", ["version_id", "valid_from"]
    )
    op.create_index(
        "uq_lean_version_history_open",
        "lean_version_history",
        ["version_id"],
        unique=True,
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_where=sa.text("valid_to IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("lean_version_history")
    op.drop_table("lean_hash")
    op.drop_table("lean_version")
    op.drop_table("sync_run")
