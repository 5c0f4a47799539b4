"""What a run's notification says, built from the database alone.

The digest for people (a title and a Markdown body, at most MAX_LINES
events) and the webhook document for programs (schema ``leansync.run/1``,
every event) are read from the committed run, never from the process's
memory, so a redelivery carries the same bytes as the first attempt.
Events are the run's rows of the change feed (leansync.read.events), in
its order; links come from leansync.outputs.links only.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, or_, select

from leansync.library import COUNT_NAMES
from leansync.outputs.links import commit_url, compare_url
from leansync.read import EVENT_LISTING_COLUMNS, events, lean_version_event
from leansync.store.models import lean_version_history, sync_run
from leansync.timespec import format_utc, utc_text_values

SCHEMA = "leansync.run/1"
MAX_LINES = 20
TICK = timedelta(microseconds=1)  # a run's events are those at exactly its started_at
H = lean_version_history.c
E = lean_version_event.c
DOCUMENT_EVENT_KEYS = (*EVENT_LISTING_COLUMNS, "commit_url", "compare_url")
VERSION_EVENTS = ("new_version", "changed", "removed", "restored")
# Markdown's inline specials: API text must not become links or markup.
_MARKDOWN_SPECIALS = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~#"})


@dataclass(frozen=True)
class Digest:
    run_id: int
    started_at: datetime
    title: str
    body: str  # Markdown
    document: bytes  # the webhook's JSON body, exactly as sent

    @property
    def has_news(self) -> bool:
        return bool(self.body)


def build(conn: Connection, run_id: int) -> Digest:
    run = conn.execute(select(sync_run).where(sync_run.c.id == run_id)).one()._mapping
    started_at = run["started_at"]
    rows = events(conn, since=started_at, until=started_at + TICK)
    states = _states(conn, started_at)
    base = _newest_listed_hash(conn, started_at)
    linked = [_with_links(row, states.get((row["version_id"], row["event"])), base) for row in rows]
    document = {
        "schema": SCHEMA,
        "run_id": run_id,
        "started_at": format_utc(started_at),
        "finished_at": format_utc(run["finished_at"]) if run["finished_at"] else None,
        "counts": {name: run[name] for name in COUNT_NAMES},
        "events": [{name: utc_text_values(event[name]) for name in DOCUMENT_EVENT_KEYS} for event, _ in linked],
    }
    lines = [_line(event, state) for event, state in linked[:MAX_LINES]]
    if len(linked) > MAX_LINES:
        lines.append(f"… and {len(linked) - MAX_LINES} more: leansync changes --since {format_utc(started_at)}")
    return Digest(
        run_id=run_id,
        started_at=started_at,
        title=_title(linked),
        body="\n".join(lines),
        document=json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(),
    )


def _states(conn: Connection, started_at: datetime) -> dict[tuple[int, str], dict]:
    """The history row each version event of the run opened (or, for removed, closed)."""
    stmt = (
        select(E.version_id, E.event, *[H[name] for name in ("name", "description", "ref", "lean_hash", "public",
                                                              "created")])
        .select_from(lean_version_event.join(lean_version_history, H.id == E.history_id))
        .where(E.event_time >= started_at, E.event_time < started_at + TICK)
    )
    return {(row.version_id, row.event): dict(row._mapping) for row in conn.execute(stmt)}


def _newest_listed_hash(conn: Connection, started_at: datetime) -> str | None:
    """The leanHash of the highest-id version listed just before the run; None on a first run."""
    return conn.execute(
        select(H.lean_hash)
        .where(H.valid_from < started_at, or_(H.valid_to.is_(None), H.valid_to >= started_at))
        .order_by(H.version_id.desc())
        .limit(1)
    ).scalar()


def _with_links(row: dict, state: dict | None, base: str | None) -> tuple[dict, dict | None]:
    event = dict(row)
    changes = row["changes"] or {}
    lean_hash = state["lean_hash"] if state is not None else None
    if row["event"] == "new_hash":
        event["commit_url"] = commit_url(row["hash"]) if row["hash_kind"] == "lean" else None  # lean_cloud: private
        event["compare_url"] = None
    else:
        event["commit_url"] = commit_url(lean_hash)
        if row["event"] == "new_version":
            event["compare_url"] = compare_url(base, lean_hash)
        elif "lean_hash" in changes:
            event["compare_url"] = compare_url(changes["lean_hash"].get("old"), changes["lean_hash"].get("new"))
        else:
            event["compare_url"] = None
    return event, state


# --- the digest for people -----------------------------------------------------

def _title(linked: list[tuple[dict, dict | None]]) -> str:
    version_events = [(e, s) for e, s in linked if e["event"] in VERSION_EVENTS]
    if len(version_events) == 1 and version_events[0][0]["event"] == "new_version":
        event, state = version_events[0]
        facts = ["public" if state["public"] else "private"]
        if state["ref"]:
            facts.append(_one_line(state["ref"]))
        return f"LEAN {event['version_id']} is available ({', '.join(facts)})"
    counted = {kind: sum(e["event"] == kind for e, _ in linked) for kind in (*VERSION_EVENTS, "new_hash")}
    parts = []
    if counted["new_version"]:
        parts.append(f"{counted['new_version']} new LEAN version{'s' if counted['new_version'] != 1 else ''}")
    parts += [f"{counted[kind]} {kind}" for kind in ("changed", "removed", "restored") if counted[kind]]
    if not parts and counted["new_hash"]:
        parts.append(f"{counted['new_hash']} new hash{'es' if counted['new_hash'] != 1 else ''}")
    return "leansync: " + ", ".join(parts)


def _line(event: dict, state: dict | None) -> str:
    kind, version_id = event["event"], event["version_id"]
    links = []
    if event["commit_url"]:
        links.append(f"[commit]({event['commit_url']})")
    if event["compare_url"]:
        links.append(f"[compare]({event['compare_url']})")
    if kind == "new_hash":
        text = f"**New {event['hash_kind']} hash** `{event['hash']}` (first on {version_id})"
    elif kind == "new_version":
        facts = [_md(state["name"]), _md(state["ref"]), "public" if state["public"] else "private",
                 f"created {format_utc(state['created'])}" if state["created"] else None,
                 _md(_first_line(state["description"]))]
        text = f"**New** {version_id}: " + " · ".join(f for f in facts if f)
    elif kind == "removed":
        text = f"**Removed** {version_id}" + (f" ({_md(state['name'])})" if state and state["name"] else "")
    else:  # changed, restored
        text = f"**{kind.capitalize()}** {version_id}"
        if event["changes"]:
            text += ": " + "; ".join(f"{_md(name)} {_value(change, 'old')} → {_value(change, 'new')}"
                                     for name, change in event["changes"].items())
    return "- " + " · ".join([text, *links])


def _value(change: dict, side: str) -> str:
    if side not in change:
        return "(absent)"
    value = change[side]
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, (dict, list)):
        return _md(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _md(_one_line(str(value)))


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _md(text: str | None) -> str | None:
    """API text as literal Markdown: one line, its specials escaped."""
    return _one_line(text).translate(_MARKDOWN_SPECIALS) if text else None
