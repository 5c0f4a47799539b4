"""The pure heart of a sync: what is stored + what the API lists -> a plan.

No I/O and no clock here, so every rule of the history can be tested
exhaustively with plain values (tests/test_diff.py).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from leansync.errors import GuardError
from leansync.models import API_FIELDS
from leansync.payload import Version, fields_of, raw_text

HASH_KINDS = (("lean", API_FIELDS.index("lean_hash")), ("lean_cloud", API_FIELDS.index("lean_cloud_hash")))


class StoredVersion(NamedTuple):
    """A lean_version row as the diff needs it."""

    id: int
    fields: tuple | None  # the seven API fields in API_FIELDS order; None: derive from raw
    raw: Any  # the raw object, or the JSON text it was stored as (payload.raw_text)
    removed: bool


class Change(NamedTuple):
    """A version whose modelled fields differ from (or return to) its stored state."""

    version: Version
    changed_fields: tuple[str, ...]  # empty for a restore with no field change


class NewHash(NamedTuple):
    kind: str  # "lean" or "lean_cloud"
    hash: str
    first_version_id: int


@dataclass
class Plan:
    versions_seen: int = 0
    listed_before: int = 0  # versions listed (not removed) before this run
    inserted: list[Version] = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    restored: list[Change] = field(default_factory=list)
    unchanged: int = 0
    raw_refreshed: list[Version] = field(default_factory=list)  # unchanged, but raw differs
    removed: list[int] = field(default_factory=list)
    new_hashes: list[NewHash] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "versions_seen": self.versions_seen,
            "inserted": len(self.inserted),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "restored": len(self.restored),
            "new_hashes": len(self.new_hashes),
        }

    def changes(self) -> list[dict]:
        """Every planned change as a plain dict, in a stable order (for output)."""
        out: list[dict] = [{"action": "insert", "id": v.id} for v in self.inserted]
        out += [{"action": "update", "id": c.version.id, "changed_fields": list(c.changed_fields)} for c in self.updated]
        out += [{"action": "restore", "id": c.version.id, "changed_fields": list(c.changed_fields)} for c in self.restored]
        out += [{"action": "remove", "id": vid} for vid in self.removed]
        out += [{"action": "new_hash", "kind": h.kind, "hash": h.hash, "first_version_id": h.first_version_id}
                for h in self.new_hashes]
        return out

    @property
    def has_changes(self) -> bool:
        """True when the run changes history (not just last_seen_at or raw)."""
        return bool(self.inserted or self.updated or self.restored or self.removed or self.new_hashes)


def changed_fields(old: tuple, new: tuple) -> tuple[str, ...]:
    return tuple(name for name, a, b in zip(API_FIELDS, old, new) if a != b)


def plan_sync(
    *,
    stored: Iterable[StoredVersion],
    known_hashes: set[tuple[str, str]],
    incoming: list[Version],
) -> Plan:
    """Compare the stored versions and known hashes with the API's current list."""
    plan = plan_versions(stored=stored, incoming=incoming)
    plan.new_hashes = new_hashes(plan, known_hashes)
    return plan


def plan_versions(*, stored: Iterable[StoredVersion], incoming: list[Version]) -> Plan:
    """The versions part of the plan (everything but new_hashes).

    A version whose raw object is exactly the stored one is unchanged, without
    looking further: that is the common case, kept cheap. A stored raw may be
    the JSON text it was written as (SQLite), compared without decoding.
    """
    plan = Plan(versions_seen=len(incoming))
    by_id = {s.id: s for s in stored}
    plan.listed_before = sum(1 for s in by_id.values() if not s.removed)

    for version in incoming:
        old = by_id.get(version.id)
        if old is None:
            plan.inserted.append(version)
        elif old.removed:
            plan.restored.append(Change(version, changed_fields(stored_fields(old), version.fields)))
        elif _same_raw(old.raw, version):
            plan.unchanged += 1
        elif stored_fields(old) != version.fields:
            plan.updated.append(Change(version, changed_fields(stored_fields(old), version.fields)))
        else:  # only fields the schema does not model changed: refresh raw
            plan.unchanged += 1
            plan.raw_refreshed.append(version)

    listed_now = {v.id for v in incoming}
    plan.removed = sorted(s.id for s in by_id.values() if not s.removed and s.id not in listed_now)
    return plan


def _same_raw(stored: Any, version: Version) -> bool:
    # Stored text is compared with the text as sent (or encoded): cheaper than decoding.
    return stored == (raw_text(version) if type(stored) is str else version.raw)


def stored_fields(old: StoredVersion) -> tuple:
    """The stored fields, derived from the stored raw object when not read."""
    if old.fields is not None:
        return old.fields
    return fields_of(json.loads(old.raw) if isinstance(old.raw, str) else old.raw)


def hash_candidates(plan: Plan) -> list[Version]:
    """The versions that may carry a hash never seen before.

    Only new, changed and returning versions: an unchanged version's hashes
    were recorded when its current fields were.
    """
    return plan.inserted + [c.version for c in plan.updated] + [c.version for c in plan.restored]


def new_hashes(plan: Plan, known: set[tuple[str, str]]) -> list[NewHash]:
    """Hashes never seen before, each with the lowest id carrying it in this run."""
    descending = sorted(hash_candidates(plan), key=_version_id, reverse=True)
    new: list[NewHash] = []
    for kind, position in HASH_KINDS:
        known_here = {value for k, value in known if k == kind}
        # Walking ids downwards, the last write for a hash is its lowest id.
        first = {v.fields[position]: v.id for v in descending}
        fresh = sorted((value, vid) for value, vid in first.items() if value and value not in known_here)
        new += [NewHash(kind, value, vid) for value, vid in fresh]  # null or "" is no hash
    return new


def _version_id(version: Version) -> int:
    return version.id


def check_mass_removal(plan: Plan, *, allow: bool) -> None:
    """Refuse a run that would remove more than half of the listed versions.

    A glitching API that suddenly lists nothing must not "remove" the history.
    """
    if allow or not plan.removed:
        return
    if len(plan.removed) * 2 > plan.listed_before:
        raise GuardError(
            f"refusing to mark {len(plan.removed)} of {plan.listed_before} listed versions as "
            "removed (more than half); if QuantConnect really withdrew them, run again with "
            "--allow-mass-removal"
        )
