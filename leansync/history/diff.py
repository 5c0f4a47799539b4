"""The pure heart of a sync: what is stored + what the API lists -> a plan.

No I/O and no clock here, so every rule of the history can be tested
exhaustively with plain values (tests/test_diff.py).

A run goes through it in three steps, reading the database in between
(leansync.history.sync):
  1. ``classify``: each item of the response whose bytes are its listed
     version's stored ones (same digest) is unchanged and is never decoded;
     the others are decoded and validated (leansync.source.payload), one at a
     time: a new version is handed on as it comes (a real run writes it
     then), the others are kept. Duplicate ids are caught here.
  2. ``plan_versions``: the kept items against the stored state of their ids.
  3. ``new_hashes``: the hashes the new states carry that are not known yet
     (a real run leaves this to the writer's SQL, which counts them).

What grows with the number of versions is only the StoredIndex (arrays and
one bytes object) and the new ids (an array).
"""

from array import array
from hashlib import blake2b
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, NamedTuple

import msgspec

from leansync.errors import GuardError
from leansync.store.models import API_FIELDS
from leansync.source.payload import DIGEST_SIZE, Version, decode_id, decode_version, duplicate_id_error

NO_DIGEST = bytes(DIGEST_SIZE)  # in the index: a removed version, or no digest yet
NO_DIGEST_HEX = NO_DIGEST.hex()
HASH_KINDS = (("lean", API_FIELDS.index("lean_hash")), ("lean_cloud", API_FIELDS.index("lean_cloud_hash")))


class StoredIndex:
    """What a run knows of every stored version before it reads the response, compactly.

    It is the one thing a run holds that grows with the number of versions:
    so no Python object per version, but ids in ascending order in an
    array, their digests in one bytes object (16 bytes each, zeros for a
    removed version or one with no digest yet: never matched) and a removed
    flag per id. At 1,000,000 versions that is 25 MB.
    """

    def __init__(self):
        self.ids = array("q")
        self.digests = bytearray()
        self.removed_flags = bytearray()
        self.listed_count = 0

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, rows: Sequence[tuple[int, str | None, bool]]) -> None:
        """Add (id, raw_digest hex or None, removed) rows, with ids above those held, ascending."""
        if not rows:
            return
        ids, hexes, removed = zip(*rows)  # C-level loops: this runs on every version, every run
        if self.ids and ids[0] <= self.ids[-1] or any(map(int.__ge__, ids, ids[1:])):
            raise ValueError("stored versions must come in ascending id order")
        self.ids.extend(ids)
        flags = bytes(map(bool, removed))
        self.removed_flags += flags
        self.listed_count += len(flags) - flags.count(1)
        self.digests += bytes.fromhex("".join([NO_DIGEST_HEX if gone or h is None else h
                                              for h, gone in zip(hexes, flags)]))

    def position(self, version_id: int | None) -> int:
        """The position of a stored id, or -1."""
        if version_id is None:
            return -1
        at = bisect_left(self.ids, version_id)
        return at if at < len(self.ids) and self.ids[at] == version_id else -1

    def digest_at(self, position: int) -> bytes:
        return self.digests[position * DIGEST_SIZE:(position + 1) * DIGEST_SIZE]

    # Whole sets, for tests and small uses; a run never builds them.
    @property
    def listed(self) -> set[int]:
        return set(compress(self.ids, (not flag for flag in self.removed_flags)))

    @property
    def removed(self) -> set[int]:
        return set(compress(self.ids, self.removed_flags))

    @property
    def by_digest(self) -> dict[str, int]:
        """raw_digest (hex) -> id, of the listed versions that have one."""
        return {self.digest_at(i).hex(): vid for i, vid in enumerate(self.ids) if self.digest_at(i) != NO_DIGEST}


class StoredVersion(NamedTuple):
    """A stored version's state, as the diff compares it."""

    id: int
    fields: tuple  # the seven modelled fields in API_FIELDS order (created aware UTC)
    extra: Any  # the state's other keys, decoded (None: none); see writer.read_stored
    removed: bool


class Change(NamedTuple):
    """A version whose state differs from (or returns to) its stored state."""

    version: Version
    changed_fields: tuple[str, ...]  # empty for a restore with nothing changed


class NewHash(NamedTuple):
    kind: str  # "lean" or "lean_cloud"
    hash: str
    first_version_id: int


@dataclass
class Sorting:
    """Step 1's outcome, filled in while the items stream by (see classify)."""

    versions_seen: int
    seen: array  # per stored position: the position of the item with that id; -1: not listed
    unchanged: int = 0  # items whose bytes are their listed version's stored ones (never decoded)
    # The new ids, in the response's order, and their positions in it (both validated 32-bit integers).
    inserted_ids: array = field(default_factory=lambda: array("i"))
    inserted_at: array = field(default_factory=lambda: array("i"))
    existing: list[Version] = field(default_factory=list)  # decoded items whose id is stored

    @classmethod
    def of(cls, index: StoredIndex, versions_seen: int) -> "Sorting":
        return cls(versions_seen=versions_seen, seen=array("q", [-1]) * len(index))


@dataclass
class Plan:
    versions_seen: int = 0
    listed_before: int = 0  # versions listed (not removed) before this run
    # None in a real run: the new versions went to the database as they were decoded, and only
    # their ids are kept (new_ids); a dry run and the tests keep them whole.
    inserted: list[Version] | None = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    restored: list[Change] = field(default_factory=list)
    unchanged: int = 0
    raw_refreshed: list[Version] = field(default_factory=list)  # unchanged, but sent in other bytes
    removed: list[int] = field(default_factory=list)
    # None in a real run: the writer inserts them set-based and counts them (new_hash_count).
    new_hashes: list[NewHash] | None = field(default_factory=list)
    new_ids: array = field(default_factory=lambda: array("i"))
    new_hash_count: int = 0

    @property
    def inserted_ids(self) -> Sequence[int]:
        return self.new_ids if self.inserted is None else [v.id for v in self.inserted]

    def counts(self) -> dict[str, int]:
        return {
            "versions_seen": self.versions_seen,
            "inserted": len(self.inserted_ids),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "restored": len(self.restored),
            "new_hashes": self.new_hash_count if self.new_hashes is None else len(self.new_hashes),
        }

    def changes(self) -> list[dict]:
        """Every planned change as a plain dict, in a stable order (for output)."""
        return list(self.iter_changes())

    def iter_changes(self, *, hashes: bool = True) -> Iterator[dict]:
        """changes() one at a time: a huge first run's output needs only the first few.

        ``hashes`` False leaves the new hashes out (a real run has them in
        the database only: see leansync.history.writer.read_run_hashes).
        """
        for vid in self.inserted_ids:
            yield {"action": "insert", "id": vid}
        for c in self.updated:
            yield {"action": "update", "id": c.version.id, "changed_fields": list(c.changed_fields)}
        for c in self.restored:
            yield {"action": "restore", "id": c.version.id, "changed_fields": list(c.changed_fields)}
        for vid in self.removed:
            yield {"action": "remove", "id": vid}
        if hashes:
            for h in self.new_hashes or ():
                yield {"action": "new_hash", "kind": h.kind, "hash": h.hash, "first_version_id": h.first_version_id}

    @property
    def has_changes(self) -> bool:
        """True when the run changes history (not just a stored object's spelling)."""
        return bool(self.inserted_ids or self.updated or self.restored or self.removed or self.new_hashes
                    or self.new_hash_count)


def index_versions(rows: Iterable[tuple[int, str | None, bool]]) -> StoredIndex:
    """The index from (id, raw_digest, removed) of every stored version, in any order."""
    index = StoredIndex()
    index.extend(sorted(rows))
    return index


def classify(items: Sequence[bytes], *, index: StoredIndex, sorting: Sorting, source: str) -> Iterator[Version]:
    """Step 1, one item at a time: yield each new version (its id is not stored), decoded
    and validated, in order; count the items that are exactly a listed version's stored
    bytes (never decoded), and keep the other decoded ones in ``sorting.existing``.

    The caller writes what it is given as it comes, so nothing here holds
    every version. Raises PayloadError for a bad item or a repeated id: the
    first in order, as if the items were read one by one.
    """
    seen = sorting.seen
    compare = index.listed_count > 0  # a first run: nothing to match, no digest to compute
    direction = 0  # while the new ids come in one direction (the API sorts them), none can repeat
    new_first: dict[int, int] | None = None  # else: each new id's first position
    # The no-op path, once per item: the id alone, a binary search and a digest; kept inline (no calls).
    ids, digests, stored = index.ids, index.digests, len(index.ids)
    for position, item in enumerate(items):
        if compare and (vid := decode_id(item)) is not None:
            at = bisect_left(ids, vid)
            if (at < stored and ids[at] == vid and digests[at * DIGEST_SIZE:(at + 1) * DIGEST_SIZE]
                    == blake2b(item, digest_size=DIGEST_SIZE).digest()):
                if seen[at] >= 0:
                    raise duplicate_id_error(source=source, index=position, version_id=vid, earlier=seen[at])
                seen[at] = position
                sorting.unchanged += 1
                continue
        version = decode_version(item, index=position, source=source)
        vid = version.id
        if stored and (at := index.position(vid)) >= 0:
            if seen[at] >= 0:
                raise duplicate_id_error(source=source, index=position, version_id=vid, earlier=seen[at])
            seen[at] = position
            sorting.existing.append(version)
            continue
        new_ids = sorting.inserted_ids
        if new_first is None and new_ids:
            step = (vid > new_ids[-1]) - (vid < new_ids[-1])
            if step == 0 or step == -direction:
                new_first = dict(zip(reversed(new_ids), reversed(sorting.inserted_at)))
            else:
                direction = step
        if new_first is not None and (earlier := new_first.setdefault(vid, position)) != position:
            raise duplicate_id_error(source=source, index=position, version_id=vid, earlier=earlier)
        new_ids.append(vid)
        sorting.inserted_at.append(position)
        yield version


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


def plan_versions(*, index: StoredIndex, sorting: Sorting, stored: Mapping[int, StoredVersion],
                  inserted: list[Version] | None) -> Plan:
    """Step 2, once every item went through classify: ``stored`` holds the stored
    state of every id in ``sorting.existing``."""
    plan = Plan(versions_seen=sorting.versions_seen, listed_before=index.listed_count, inserted=inserted,
                new_ids=sorting.inserted_ids, unchanged=sorting.unchanged)
    for version in sorting.existing:
        old = stored[version.id]
        changed = changed_fields(old, version)
        if old.removed:
            plan.restored.append(Change(version, changed))
        elif changed:
            plan.updated.append(Change(version, changed))
        else:  # the same object in other bytes (key order, spacing, created's format, 1 for true)
            plan.unchanged += 1
            plan.raw_refreshed.append(version)
    plan.removed = [vid for vid, where, gone in zip(index.ids, sorting.seen, index.removed_flags)
                    if where < 0 and not gone]
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
    sorting = Sorting.of(index, len(items))
    inserted = list(classify(items, index=index, sorting=sorting, source=source))
    plan = plan_versions(index=index, sorting=sorting, stored={s.id: s for s, _ in pairs}, inserted=inserted)
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
