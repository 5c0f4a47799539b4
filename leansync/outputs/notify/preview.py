"""`sync --dry-run` with targets: what each target would be sent, without sending or writing anything.

The digest is built from the database (see leansync.outputs.notify.digest),
so the preview applies the plan inside a transaction that it rolls back, and
builds the digest from that: the exact bytes the real run would send. With
no database yet, the plan is applied to a throwaway in-memory one.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from leansync.outputs.notify.digest import Digest, build
from leansync.outputs.notify.targets import Target


@dataclass(frozen=True)
class Preview:
    label: str
    kind: str  # apprise or webhook
    digest: Digest

    def as_dict(self) -> dict:
        import json

        if self.kind == "webhook":
            return {"target": self.label, "kind": self.kind, "document": json.loads(self.digest.document)}
        return {"target": self.label, "kind": self.kind, "title": self.digest.title, "body": self.digest.body}


def rehearse(conn: Connection | None, plan, *, targets: list[Target], source: str,
             observed_at: datetime | None) -> list[Preview]:
    """The previews of a planned run: none when it changes nothing (no news) or there is no target."""
    if not targets or not plan.has_changes:
        return []
    if conn is None:
        from leansync.store.database import ensure_schema, make_engine

        engine = make_engine("sqlite://")
        try:
            ensure_schema(engine)
            with engine.connect() as scratch:
                return _rehearse(scratch, plan, targets=targets, source=source, observed_at=observed_at)
        finally:
            engine.dispose()
    return _rehearse(conn, plan, targets=targets, source=source, observed_at=observed_at)


def _rehearse(conn: Connection, plan, *, targets, source, observed_at) -> list[Preview]:
    from leansync.history.sync import run_clock
    from leansync.history.writer import apply_plan, finish_run, insert_run

    try:
        started_at = observed_at or run_clock(conn)
        run_id = insert_run(conn, started_at=started_at, source=source, status="success", counts=plan.counts())
        apply_plan(conn, plan, run_id=run_id, now=started_at)
        finish_run(conn, run_id, finished_at=started_at)
        digest = build(conn, run_id)
    finally:
        conn.rollback()
    return [Preview(label=t.label, kind=t.kind, digest=digest) for t in targets]
