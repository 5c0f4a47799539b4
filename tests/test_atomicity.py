"""A run killed with SIGKILL at any moment leaves the database exactly as
before the run or exactly as after it (reliability issue, item 5).

The installed `leansync` command syncs a large change (20,000 versions:
inserts, updates, removals, restores and new hashes over a history of 4,289
real tags) and is killed again and again at moments spread over the whole
run: start-up, reading the payload, the diff, the writes, the commit. After
each kill the database must pass SQLite's integrity_check, keep the history
invariants, and equal either the state before the run or the state an
uninterrupted run of the same sync produces on a copy. Timestamps differ
between runs, so both sides are compared normalised (tests/dbstate.py):
every row a run writes carries that run's sync_run.started_at.
"""

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbstate import check_integrity, check_invariants, has_schema, is_sqlite, snapshot
from leansync.samples import response, version_from_tag

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
TOTAL_VERSIONS = 20_000
KILLS = 10
MORE_KILLS = 4  # at most, aimed at the commit
SEED = 20260127


def history_payloads(tag_versions: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Two runs that make the before-state, and the big run to kill.

    Before: every tag, then every tag but each 7th (removed). The big run
    lists every tag but each 10th (so each 7th that is not a 10th returns),
    changes the description of each 3rd, and adds synthetic versions with
    ids above the real ones and hashes of their own up to 20,000.
    """
    first = [dict(v) for v in tag_versions]
    second = [v for i, v in enumerate(first) if i % 7]
    big = []
    for i, version in enumerate(first):
        if i % 10 == 0:
            continue
        if i % 3 == 0:
            version = dict(version, description=version["description"] + " (amended)")
        big.append(version)
    synthetic_id = 1_000_000
    while len(big) < TOTAL_VERSIONS:
        synthetic_id += 1
        template = tag_versions[synthetic_id % len(tag_versions)]
        big.append(version_from_tag({
            "id": str(synthetic_id),
            "lean_hash": hashlib.sha1(f"synthetic:{synthetic_id}".encode()).hexdigest(),
            "committed_utc": template["created"],
            "subject": template["description"],
        }))
    return first, second, big


class Copies:
    """Save, restore and copy a database on either backend."""

    def __init__(self, url: str, request, tmp_path: Path):
        self.url = url
        self.tmp_path = tmp_path
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            self.path = Path(url.removeprefix("sqlite:///"))
        else:
            self.cluster = request.getfixturevalue("postgres_cluster")
            self.name = url.rsplit("/", 1)[1]
            self.extra: list[str] = []
            request.addfinalizer(lambda: [self.cluster.drop_database(n) for n in self.extra])

    def _files(self, path: Path) -> list[Path]:
        return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]

    def _copy_file(self, source: Path, target: Path) -> None:
        for leftover in self._files(target):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(source, target)

    def _pg_clone(self, source: str, target: str) -> None:
        with self.cluster.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')

    def save(self) -> None:
        """Keep the current state (every connection to it closed) as pristine."""
        if self.sqlite:
            assert not any(f.exists() for f in self._files(self.path)), "the WAL was not checkpointed"
            self._copy_file(self.path, self.tmp_path / "pristine.db")
        else:
            self.extra.append(f"{self.name}_pristine")
            self._pg_clone(self.name, f"{self.name}_pristine")

    def restore(self) -> None:
        if self.sqlite:
            self._copy_file(self.tmp_path / "pristine.db", self.path)
        else:
            self._pg_clone(f"{self.name}_pristine", self.name)

    def copy_of_pristine(self) -> str:
        if self.sqlite:
            target = self.tmp_path / "reference.db"
            self._copy_file(self.tmp_path / "pristine.db", target)
            return f"sqlite:///{target}"
        self.extra.append(f"{self.name}_reference")
        self._pg_clone(f"{self.name}_pristine", f"{self.name}_reference")
        return self.url.rsplit("/", 1)[0] + f"/{self.name}_reference"

    def wal_bytes(self) -> int:
        """Bytes in the SQLite WAL: frames a killed run wrote but never committed."""
        if not self.sqlite:
            return 0
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0


def leansync_sync(url: str, payload: Path) -> subprocess.Popen:
    return subprocess.Popen([LEANSYNC, "--database-url", url, "sync", "-q", "--from-file", str(payload)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def completed(url: str, payload: Path) -> float:
    """Run a sync to the end; return how long it took (to spread the kills over)."""
    started = time.monotonic()
    proc = leansync_sync(url, payload)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - started


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_before_or_after(database_url, request, tmp_path, tag_versions):
    first, second, big = history_payloads(tag_versions)
    payloads = []
    for n, versions in enumerate((first, second, big)):
        payloads.append(tmp_path / f"payload-{n}.json")
        payloads[-1].write_text(json.dumps(response(versions)))
    completed(database_url, payloads[0])
    completed(database_url, payloads[1])

    copies = Copies(database_url, request, tmp_path)
    copies.save()
    check_invariants(database_url)
    before = snapshot(database_url)
    reference = copies.copy_of_pristine()
    duration = completed(reference, payloads[2])
    check_invariants(reference)
    after = snapshot(reference)
    counts = after["sync_run"][-1]
    # The run really changes history in every way.
    assert all(counts[k] > 0 for k in ("inserted", "updated", "removed", "restored", "new_hashes")), counts
    assert before != after

    def kill_at(delay: float) -> str:
        proc = leansync_sync(database_url, payloads[2])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        uncommitted = copies.wal_bytes()
        # Equal to a state that keeps the invariants, so it keeps them too.
        check_integrity(database_url)
        state = snapshot(database_url)
        if state == before:
            return "before, mid-write" if uncommitted else "before"
        if state == after:
            copies.restore()
            return "after"
        changed = [t for t in state if state[t] not in (before[t], after[t])]
        pytest.fail(f"a kill after {delay:.2f} s of {duration:.2f} s (exit {proc.returncode}) left the "
                    f"database neither in the before- nor in the after-state (tables {changed} differ)")

    # One kill in each tenth of the run's duration, at a random point in it.
    rng = random.Random(SEED)
    outcomes = {delay: kill_at(delay) for delay in (duration * (i + rng.random()) / KILLS for i in range(KILLS))}
    if copies.sqlite:
        # Home in on the commit, where a kill lands inside the write transaction
        # (the WAL then holds frames that were never committed): halve the gap
        # between the latest kill that left the before-state and the earliest
        # later one that left the after-state.
        for _ in range(MORE_KILLS):
            if sum(o == "before, mid-write" for o in outcomes.values()) >= 2:
                break
            low = max(d for d, o in outcomes.items() if o != "after")
            high = min((d for d, o in outcomes.items() if o == "after" and d > low), default=low + 1)
            outcomes[(low + high) / 2] = kill_at((low + high) / 2)
        assert "before, mid-write" in outcomes.values(), f"no kill landed inside the transaction: {outcomes}"
    print(f"\nkills over {duration:.2f} s: {sorted(outcomes.items())}", file=sys.stderr)
    assert any(o != "after" for o in outcomes.values()), "every kill came too late to test anything"

    # Whatever the kills left behind, the next run completes and lands exactly like the reference.
    completed(database_url, payloads[2])
    check_invariants(database_url)
    assert snapshot(database_url) == after


@pytest.mark.slow
def test_sigkill_during_the_first_run_leaves_no_partial_schema_or_data(database_url, tmp_path, tag_versions):
    """Killed while it creates the schema or writes the first rows, a new
    database holds no rows at all (the schema may or may not exist); the
    next run then migrates and syncs as if nothing had happened."""
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(response(tag_versions)))
    for delay in (0.3, 0.5, 0.7, 0.9):
        proc = leansync_sync(database_url, payload)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if not has_schema(database_url):
            continue  # killed before the migration committed: nothing at all
        check_integrity(database_url)
        state = snapshot(database_url)
        if state["sync_run"]:
            break  # it committed before the kill: checked as the complete state below
        assert all(len(state[t]) == 1 for t in state if t != "sync_run"), f"a kill after {delay} s left rows"
    else:
        completed(database_url, payload)
    check_invariants(database_url)
    state = snapshot(database_url)
    assert len(state["lean_version"]) == 1 + len(tag_versions)  # column names, then rows
    assert [r["status"] for r in state["sync_run"]] == ["success"]
