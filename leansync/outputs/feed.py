"""The Atom 1.0 feed of the change events (`leansync feed`, `sync --feed-file`).

Built with feedgen from the events `leansync changes` lists (leansync.read.events).
Each entry's id is derived from the event itself (its kind and history row,
or the new hash), never from when the feed was made, so a rebuilt feed keeps
its entries' ids and feed readers show no duplicates.
"""

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection

from leansync.outputs.links import lean_repo_url
from leansync.timespec import format_utc

DEFAULT_LIMIT = 50
FEED_ID = "tag:leansync,2026:lean-versions"
ID_PREFIX = "tag:leansync,2026:event/"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
VERBS = {"new_version": "added", "changed": "changed", "removed": "removed", "restored": "restored"}


def entry_id(event: dict) -> str:
    """Stable: the event's kind and the history row it opened or closed, or the hash it first saw."""
    if event["event"] == "new_hash":
        return f"{ID_PREFIX}new_hash/{event['hash_kind']}/{event['hash']}"
    return f"{ID_PREFIX}{event['event']}/{event['version_id']}/{event['history_id']}"


def _text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_utc(value)
    return str(value)


def entry_title(event: dict) -> str:
    """`LEAN 18025 added (public, master)`; `LEAN 18025 changed: ref (private, release)`."""
    if event["event"] == "new_hash":
        kind = "leanHash" if event["hash_kind"] == "lean" else "leanCloudHash"
        return f"New {kind} {event['hash'][:12]} (first on LEAN {event['version_id']})"
    state = event["state"]
    visibility = {True: "public", False: "private"}.get(state["public"], "visibility unknown")
    detail = f": {event['changed_fields'].replace(',', ', ')}" if event["changed_fields"] else ""
    return f"LEAN {event['version_id']} {VERBS[event['event']]}{detail} ({visibility}, {_text(state['ref'])})"


def entry_content(event: dict) -> str:
    """Plain text: what happened, the version's fields, and each change old → new."""
    when = format_utc(event["event_time"])
    if event["event"] == "new_hash":
        lines = [f"{event['hash_kind']} hash {event['hash']} first seen at {when}, "
                 f"first carried by version {event['version_id']}."]
    else:
        state = event["state"]
        lines = [f"Version {event['version_id']} {VERBS[event['event']]} at {when} (run {event['sync_run_id']})."]
        if event["changes"]:
            lines.append("Changes:")
            for name, pair in event["changes"].items():
                old = _text(pair["old"]) if "old" in pair else "(absent)"
                new = _text(pair["new"]) if "new" in pair else "(absent)"
                lines.append(f"  {name}: {old} → {new}")
        lines.append("Fields:")
        lines += [f"  {name}: {_text(state[name])}" for name in
                  ("name", "ref", "public", "created", "lean_hash", "lean_cloud_hash", "description")]
        for key, value in (state["extra"] or {}).items():
            lines.append(f"  {key}: {_text(value)}")
    if event["compare_url"]:
        lines.append(f"Compare with the previous version: {event['compare_url']}")
    return "\n".join(lines)


def build_feed(conn: Connection, *, limit: int = DEFAULT_LIMIT, since: datetime | None = None) -> bytes:
    """The feed document: the newest ``limit`` events (of those at or after ``since``), newest first."""
    from feedgen.feed import FeedGenerator

    from leansync import read

    events = read.events(conn, since=since, newest=limit, with_state=True)
    repo = lean_repo_url()
    feed = FeedGenerator()
    feed.id(FEED_ID)
    feed.title("LEAN engine versions")
    feed.subtitle("QuantConnect's LEAN engine versions as leansync recorded them: added, changed, removed, "
                  "restored, and new commit hashes.")
    feed.author({"name": "leansync"})
    feed.link(href=repo, rel="alternate")
    # The feed changes when its newest event does, not each time it is written.
    last = events[-1]["event_time"] if events else (read.health(conn).last_success_at or EPOCH)
    feed.updated(last)
    for event in reversed(events):  # newest first, as feed readers expect
        entry = feed.add_entry(order="append")
        entry.id(entry_id(event))
        entry.title(entry_title(event))
        entry.updated(event["event_time"])
        entry.content(entry_content(event), type="text")
        if event["commit_url"]:  # the leanHash's commit; a leanCloudHash is never linked
            entry.link(href=event["commit_url"], rel="alternate")
    return feed.atom_str(pretty=True)


def write_feed_file(url: str, path: Path, *, limit: int = DEFAULT_LIMIT) -> None:
    """Rebuild the feed from the database at ``url`` into ``path``, atomically."""
    from leansync.outputs.files import write_atomically
    from leansync.read import reading

    with reading(url) as conn:
        document = build_feed(conn, limit=limit)
    write_atomically(path, document, what="the feed file")
