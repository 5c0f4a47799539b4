"""The pure heart of a sync: what is stored + what the API lists -> a plan.

No I/O and no clock here, so every rule of the history can be tested
exhaustively with plain values (tests/test_diff.py).

A run goes through it in three steps, reading the database in between
(leansync.history.sync):
  1. ``sort_items``: each item of the response whose digest is a listed
     version's stored one is unchanged and is never decoded; the others are
     decoded and validated (leansync.source.payload). Duplicate ids are caught here.
  2. ``plan_versions``: the decoded items against the stored state of their ids.
  3. ``new_hashes``: the hashes the new states carry that are not known yet.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, NamedTuple

import msgspec

from leansync.errors import GuardError, PayloadError
from leansync.store.models import API_FIELDS
from leansync.source.payload import Version, decode_version, digest, duplicate_id_error

HASH_KINDS = (("lean", API_FIELDS.index("lean_hash")), ("lean_cloud", API_FIELDS.index("lean_cloud_hash")))


class StoredIndex(NamedTuple):
    """What a run knows of every stored version before it reads the response."""

    by_digest: dict[str, int]  # raw_digest -> id, of the listed versions that have one
    listed: set[int]  # ids not removed
    removed: set[int]  # ids removed


class StoredVersion(NamedTuple):
    """A stored version's state, as the diff compares it."""

    id: int
    fields: tuple  # the seven modelled fields in API_FIELDS order (created aware UTC)
    extra: Any  # the state's other keys, decoded (None: none); see writer.read_stored
    removed: bool


class SortedItems(NamedTuple):
    """The response's items after step 1."""

    ids: list[int]  # every item's id, in order
    decoded: list[Version]  # the items that need comparing, in order


class Change(NamedTuple):
    """A version whose state differs from (or returns to) its stored state."""

    version: Version
    changed_fields: tuple[str, ...]  # empty for a restore with nothing changed


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
    raw_refreshed: list[Version] = field(default_factory=list)  # unchanged, but sent in other bytes
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
        """True when the run changes history (not just a stored object's spelling)."""
        return bool(self.inserted or self.updated or self.restored or self.removed or self.new_hashes)


def index_versions(rows: Iterable[tuple[int, str | None, bool]]) -> StoredIndex:
    """The index from (id, raw_digest, removed) of every stored version."""
    columns = list(zip(*rows))  # C-level loops: this runs on every version, every run
    if not columns:
        return StoredIndex({}, set(), set())
    ids, digests, removed = columns
    listed = [not flag for flag in removed]
    by_digest = dict(zip(compress(digests, listed), compress(ids, listed)))
    by_digest.pop(None, None)  # no digest yet (migrated): compared by decoding
    return StoredIndex(by_digest, set(compress(ids, listed)), set(compress(ids, removed)))


def sort_items(items: list[bytes], *, index: StoredIndex, source: str) -> SortedItems:
    """Step 1: decode only the items that are not exactly a listed version's stored bytes.

    Raises PayloadError for a bad item or a repeated id: the first in order,
    as if the items were read one by one (a bad item before a repeat wins).
    """
    # The no-op path, once per item: a digest and a lookup, in C-level loops.
    if index.by_digest:
        ids: list = list(map(index.by_digest.get, map(digest, items)))
    else:  # a first run: nothing to match, no digest to compute
        ids = [None] * len(items)
    decoded: list[Version] = []
    position = -1
    while (position := _next_none(ids, position + 1)) >= 0:
        try:
            version = decode_version(items[position], index=position, source=source)
        except PayloadError:
            _refuse_repeats(ids[:position], source)  # an earlier repeated id is reported first
            raise
        decoded.append(version)
        ids[position] = version.id
    if len(set(ids)) != len(ids):
        _refuse_repeats(ids, source)
    return SortedItems(ids, decoded)


def _next_none(ids: list, start: int) -> int:
    """The position of the next None from ``start``, or -1 (list.index: a C-level search)."""
    try:
        return ids.index(None, start)
    except ValueError:
        return -1


def _refuse_repeats(ids: list, source: str) -> None:
    """Raise for the first id that repeats an earlier one (None: not known yet)."""
    first: dict[int, int] = {}
    for position, vid in enumerate(ids):
        if vid is not None and first.setdefault(vid, position) != position:
            raise duplicate_id_error(source=source, index=position, version_id=vid, earlier=first[vid])


def canonical(value: Any) -> bytes:
    """A JSON value's canonical encoding: keys sorted at every level, no whitespace.

    Equal encodings mean equal JSON values (array order matters; 1 is not true).
    """
    return msgspec.json.encode(value, order="sorted")


def _jsonb_float(text: str) -> float | int:
    """A float as PostgreSQL's jsonb gives it back: a decimal without fraction digits is an integer."""
    from decimal import Decimal  # rarely needed: only for values that differ

    number = Decimal(text)
    return int(number) if number.as_tuple().exponent >= 0 else float(text)


_as_jsonb_reads = msgspec.json.Decoder(float_hook=_jsonb_float).decode


def same_json(a: Any, b: Any) -> bool:
    """Equal JSON values (not ==, for which 1 == True), the same on both backends.

    jsonb keeps a number as a decimal and writes one with no fraction digits
    as an integer, so a float that msgspec writes in exponent form (1e20,
    1.5e308) reads back from PostgreSQL as an integer (100000000000000000000).
    Such floats compare as those integers on every backend. Only values that
    differ are read again, so the common case costs two encodings.
    """
    left, right = canonical(a), canonical(b)
    return left == right or canonical(_as_jsonb_reads(left)) == canonical(_as_jsonb_reads(right))


def changed_fields(old: StoredVersion, new: Version) -> tuple[str, ...]:
    """The modelled columns that changed, in table order, then the other keys
    added, removed or changed, sorted."""
    names = [name for name, a, b in zip(API_FIELDS, old.fields, new.fields) if a != b]
    if not same_json(old.extra, new.extra):
        before, after = old.extra or {}, new.extra or {}
        names += sorted(key for key in before.keys() | after.keys()
                        if key not in before or key not in after or not same_json(before[key], after[key]))
    return tuple(names)


def plan_versions(*, index: StoredIndex, items: SortedItems, stored: Mapping[int, StoredVersion]) -> Plan:
    """Step 2. ``stored`` holds the stored state of (at least) every decoded
    item's id that is stored; an id not in it is new."""
    plan = Plan(versions_seen=len(items.ids), listed_before=len(index.listed))
    plan.unchanged = len(items.ids) - len(items.decoded)
    for version in items.decoded:
        old = stored.get(version.id)
        if old is None:
            plan.inserted.append(version)
            continue
        changed = changed_fields(old, version)
        if old.removed:
            plan.restored.append(Change(version, changed))
        elif changed:
            plan.updated.append(Change(version, changed))
        else:  # the same object in other bytes (key order, spacing, created's format, 1 for true)
            plan.unchanged += 1
            plan.raw_refreshed.append(version)
    plan.removed = sorted(index.listed.difference(items.ids))
    return plan


def hash_candidates(plan: Plan) -> list[Version]:
    """The versions that may carry a hash never seen before: the new states.

    An unchanged version's hashes were recorded when its state was.
    """
    return plan.inserted + [c.version for c in plan.updated] + [c.version for c in plan.restored]


def candidate_hashes(plan: Plan) -> dict[str, set[str]]:
    """The hashes of the new states, by kind (null and "" are no hash)."""
    versions = hash_candidates(plan)
    return {kind: {value for v in versions if (value := v.fields[position])} for kind, position in HASH_KINDS}


def new_hashes(plan: Plan, known: set[tuple[str, str]]) -> list[NewHash]:
    """Hashes never seen before, each with the lowest id carrying it in this run.

    ``known`` must hold at least the known ones among candidate_hashes(plan).
    The writer inserts the same rows set-based (writer.apply_plan checks it).
    """
    descending = sorted(hash_candidates(plan), key=_version_id, reverse=True)
    new: list[NewHash] = []
    for kind, position in HASH_KINDS:
        # Walking ids downwards, the last write for a hash is its lowest id.
        first = {v.fields[position]: v.id for v in descending}
        first.pop(None, None)  # null or "": no hash
        first.pop("", None)
        fresh = sorted(first.keys() - {value for k, value in known if k == kind})
        new += [NewHash(kind, value, first[value]) for value in fresh]
    return new


def _version_id(version: Version) -> int:
    return version.id


def plan_sync(*, stored: Iterable[tuple[StoredVersion, str | None]], known_hashes: set[tuple[str, str]],
              items: list[bytes], source: str) -> Plan:
    """The three steps at once, for callers that hold the whole stored state:
    each stored version with its raw_digest."""
    pairs = list(stored)
    index = index_versions((s.id, raw_digest, s.removed) for s, raw_digest in pairs)
    sorted_items = sort_items(items, index=index, source=source)
    plan = plan_versions(index=index, items=sorted_items, stored={s.id: s for s, _ in pairs})
    plan.new_hashes = new_hashes(plan, known_hashes)
    return plan


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
