"""Views for reporting tools: lean_version_current and lean_version_event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The views hold the read side's logic in one place, so `leansync changes`
and a reporting tool get the same answers. Plain SQL that SQLite (3.25+,
for window functions) and PostgreSQL both accept.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The SQL is spelled out here, not generated from leansync code: a migration
# must keep meaning what it meant when it was written.
LEAN_VERSION_CURRENT = """
CREATE VIEW lean_version_current AS
SELECT id, name, description, ref, lean_hash, lean_cloud_hash, public, created,
       first_seen_at, last_seen_at, updated_at, raw
FROM lean_version
WHERE removed_at IS NULL
"""

# One row per event. A version's history rows tell its story:
#   its first row                                   -> new_version at valid_from
#   a row whose predecessor closed at its valid_from -> changed at valid_from
#   a row whose predecessor closed earlier           -> restored at valid_from
#   a closed row with no successor opened at its valid_to -> removed at valid_to
# and every lean_hash row is a new_hash at first_seen_at.
LEAN_VERSION_EVENT = """
CREATE VIEW lean_version_event AS
SELECT s.valid_from AS event_time,
       CASE
           WHEN s.previous_history_id IS NULL THEN 'new_version'
           WHEN s.previous_valid_to = s.valid_from THEN 'changed'
           ELSE 'restored'
       END AS event,
       s.version_id AS version_id,
       s.changed_fields AS changed_fields,
       CAST(NULL AS TEXT) AS hash_kind,
       CAST(NULL AS TEXT) AS hash,
       s.id AS history_id,
       s.previous_history_id AS previous_history_id,
       s.sync_run_id AS sync_run_id
FROM (
    SELECT h.id, h.version_id, h.valid_from, h.changed_fields, h.sync_run_id,
           LAG(h.id) OVER (PARTITION BY h.version_id ORDER BY h.valid_from, h.id) AS previous_history_id,
           LAG(h.valid_to) OVER (PARTITION BY h.version_id ORDER BY h.valid_from, h.id) AS previous_valid_to
    FROM lean_version_history h
) s
UNION ALL
SELECT h.valid_to,
       'removed',
       h.version_id,
       CAST(NULL AS TEXT),
       CAST(NULL AS TEXT),
       CAST(NULL AS TEXT),
       h.id,
       CAST(NULL AS INTEGER),
       (SELECT MAX(r.id) FROM sync_run r WHERE r.started_at = h.valid_to AND r.status = 'success')
FROM lean_version_history h
WHERE h.valid_to IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM lean_version_history n
      WHERE n.version_id = h.version_id AND n.valid_from = h.valid_to
  )
UNION ALL
SELECT x.first_seen_at,
       'new_hash',
       x.first_version_id,
       CAST(NULL AS TEXT),
       x.kind,
       x.hash,
       CAST(NULL AS INTEGER),
       CAST(NULL AS INTEGER),
       x.sync_run_id
FROM lean_hash x
"""


def upgrade() -> None:
    op.execute(LEAN_VERSION_CURRENT)
    op.execute(LEAN_VERSION_EVENT)


def downgrade() -> None:
    op.execute("DROP VIEW lean_version_event")
    op.execute("DROP VIEW lean_version_current")
