"""The notification outbox: one row per run and notification target.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

A successful run that changed history writes its rows in its own
transaction; deliveries after the commit update them (see
leansync.outputs.notify.outbox). Target URLs carry credentials and are never
stored: a row names its target by a label and a keyed hash of the URL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Spelled out, not imported from leansync: a migration keeps its meaning.
TS = sa.DateTime(timezone=True)
TABLE = "One row per run and notification target."
COLUMNS = {
    "id": "Row id.",
    "sync_run_id": "The sync_run whose news this is.",
    "target_label": "The target as scheme://host[:port], without credentials, path or query (the name shown in "
                    "warnings and leansync runs).",
    "target_key": "The target's identity: the hex HMAC-SHA256 of its URL under leansync's fixed key, never the "
                  "URL. It matches pending rows to the targets configured now.",
    "status": "pending (not delivered yet), sent (the target accepted it) or abandoned (never to be sent: too old, "
              "or its target is no longer configured).",
    "attempts": "Delivery attempts made so far.",
    "last_error": "The last failure in one line, secrets masked; for an abandoned row, why it was abandoned.",
    "created_at": "The started_at of the run that wrote it.",
    "last_attempt_at": "When the last delivery attempt started, or when the row was abandoned; null before either.",
    "sent_at": "When the target accepted it; null unless sent.",
}


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer, primary_key=True, comment=COLUMNS["id"]),
        sa.Column("sync_run_id", sa.Integer, sa.ForeignKey("sync_run.id", name="fk_notification_sync_run_id_sync_run"),
                  nullable=False, comment=COLUMNS["sync_run_id"]),
        sa.Column("target_label", sa.Text, nullable=False, comment=COLUMNS["target_label"]),
        sa.Column("target_key", sa.Text, nullable=False, comment=COLUMNS["target_key"]),
        sa.Column("status", sa.Text, nullable=False, comment=COLUMNS["status"]),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0"), comment=COLUMNS["attempts"]),
        sa.Column("last_error", sa.Text, comment=COLUMNS["last_error"]),
        sa.Column("created_at", TS, nullable=False, comment=COLUMNS["created_at"]),
        sa.Column("last_attempt_at", TS, comment=COLUMNS["last_attempt_at"]),
        sa.Column("sent_at", TS, comment=COLUMNS["sent_at"]),
        sa.PrimaryKeyConstraint("id", name="pk_notification"),
        comment=TABLE,
    )
    op.create_index("uq_notification_sync_run_id_target_key", "notification", ["sync_run_id", "target_key"],
                    unique=True)
    op.create_index("ix_notification_status_sync_run_id", "notification", ["status", "sync_run_id"])


def downgrade() -> None:
    op.drop_index("ix_notification_status_sync_run_id", table_name="notification")
    op.drop_index("uq_notification_sync_run_id_target_key", table_name="notification")
    op.drop_table("notification")
