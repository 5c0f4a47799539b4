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

Kills at moments in time can all miss the write transaction on a busy
machine, so a few more are triggered by the database itself: once the run's
transaction has started writing (SQLite: its pages reach the WAL;
PostgreSQL: its backend holds a transaction id). Each test asserts that
kills did land inside the run, so none passes by killing too early or too late.

Every run that is killed, and the uninterrupted run whose duration the kills
are spread over, is the installed command. The runs that only make a state
to start from or to compare with (the two runs of the before-state, the run
after the kills, the first run resumed after a kill) run in-process (tests/main_in_process.py). After a kill the
database is first compared row for row, exactly as stored (dbstate.raw_rows), with the
before-state (which implies equal snapshots); only when that differs is the
normalised snapshot taken.
"""

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dbstate import check_integrity, check_invariants, has_schema, is_sqlite, raw_rows, snapshot
from leansync.store.database import make_engine
from main_in_process import leansync_in_process
from samples import response, version_from_tag

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
TOTAL_VERSIONS = 20_000
KILLS = 10
WRITING_KILLS = 2  # more, triggered by the run's first write
FIRST_RUN_KILLS = 5  # spread over a first run, then at most FIRST_RUN_MORE_KILLS aimed at its window
FIRST_RUN_MORE_KILLS = 6
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
        self.cluster.clone_database(source, target)

    def save(self) -> None:
        """Keep the current state (every connection to it closed) as pristine.

        On SQLite that state may be "no database file yet"."""
        if self.sqlite:
            assert not any(f.exists() for f in self._files(self.path)), "the WAL was not checkpointed"
            self.absent = not self.path.exists()
            if self.absent:
                return
            self._copy_file(self.path, self.tmp_path / "pristine.db")
        else:
            self.extra.append(f"{self.name}_pristine")
            self._pg_clone(self.name, f"{self.name}_pristine")

    def restore(self) -> None:
        if self.sqlite:
            if self.absent:
                for path in (self.path, *self._files(self.path)):
                    path.unlink(missing_ok=True)
            else:
                self._copy_file(self.tmp_path / "pristine.db", self.path)
        else:
            self._pg_clone(f"{self.name}_pristine", self.name)

    def copy_of_pristine(self) -> str:
        if self.sqlite:
            target = self.tmp_path / "reference.db"
            if self.absent:
                assert not target.exists()
            else:
                self._copy_file(self.tmp_path / "pristine.db", target)
            return f"sqlite:///{target}"
        self.extra.append(f"{self.name}_reference")
        self._pg_clone(f"{self.name}_pristine", f"{self.name}_reference")
        return self.url.rsplit("/", 1)[0] + f"/{self.name}_reference"

    def wal_bytes(self) -> int:
        """Bytes in the SQLite WAL: after a kill, frames the run wrote but never committed."""
        if not self.sqlite:
            return 0
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            return wal.stat().st_size
        except FileNotFoundError:
            return 0

    @contextmanager
    def writing(self) -> Iterator[Callable[[], bool]]:
        """A probe, for a run on this database started inside the block: has
        its write transaction started writing? SQLite: its first frames are
        in the WAL (the saved state has none, see save). PostgreSQL: a
        leansync connection holds a transaction id, which PostgreSQL assigns
        at a transaction's first write (reads and the advisory lock take none).
        """
        if self.sqlite:
            assert self.wal_bytes() == 0
            yield lambda: self.wal_bytes() > 0
            return
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                def probe() -> bool:
                    found = conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'leansync' AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL").scalar()
                    conn.rollback()  # pg_stat_activity is a snapshot per transaction: one per look
                    return found > 0

                yield probe
        finally:
            engine.dispose()  # before restore() drops the database


def leansync_sync(url: str, payload: Path) -> subprocess.Popen:
    return subprocess.Popen([LEANSYNC, "--database-url", url, "sync", "-q", "--from-file", str(payload)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool]) -> bool:
    """Poll until the condition holds (True) or the run ends (False)."""
    while proc.poll() is None:
        if condition():
            return True
        time.sleep(0.001)
    return False


def completed(url: str, payload: Path) -> float:
    """Run a sync to the end (the installed command); return how long it took (to spread the kills over)."""
    started = time.monotonic()
    proc = leansync_sync(url, payload)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - started


def completed_in_process(url: str, payload: Path) -> None:
    """The same sync to the end, in-process: for a state to start from or to compare with."""
    result = leansync_in_process("sync", "-q", "--from-file", payload, url=url)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_before_or_after(database_url, request, tmp_path, tag_versions):
    first, second, big = history_payloads(tag_versions)
    payloads = []
    for n, versions in enumerate((first, second, big)):
        payloads.append(tmp_path / f"payload-{n}.json")
        payloads[-1].write_text(json.dumps(response(versions)))
    completed_in_process(database_url, payloads[0])
    completed_in_process(database_url, payloads[1])

    copies = Copies(database_url, request, tmp_path)
    copies.save()
    check_invariants(database_url)
    before = snapshot(database_url)
    before_exactly = raw_rows(database_url, as_text=True)
    reference = copies.copy_of_pristine()
    duration = completed(reference, payloads[2])
    check_invariants(reference)
    after = snapshot(reference)
    counts = after["sync_run"][-1]
    # The run really changes history in every way.
    assert all(counts[k] > 0 for k in ("inserted", "updated", "removed", "restored", "new_hashes")), counts
    assert before != after

    def kill(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)

    def outcome(proc: subprocess.Popen, when: str, *, writing_seen: bool = False) -> str:
        uncommitted = copies.wal_bytes()
        # Equal to a state that keeps the invariants, so it keeps them too.
        check_integrity(database_url)
        if raw_rows(database_url, as_text=True) == before_exactly:  # so the snapshot is `before` too
            return "before, mid-write" if uncommitted or writing_seen else "before"
        state = snapshot(database_url)
        if state == before:
            # Killed inside the write transaction: it had written (SQLite: the
            # WAL still holds its frames, never committed), yet nothing landed.
            return "before, mid-write" if uncommitted or writing_seen else "before"
        if state == after:
            copies.restore()
            return "after"
        changed = [t for t in state if state[t] not in (before[t], after[t])]
        pytest.fail(f"a kill {when} (exit {proc.returncode}) left the database neither in the "
                    f"before- nor in the after-state (tables {changed} differ)")

    def kill_at(delay: float) -> str:
        proc = leansync_sync(database_url, payloads[2])
        time.sleep(delay)
        kill(proc)
        return outcome(proc, f"after {delay:.2f} s of {duration:.2f} s")

    def kill_while_writing(extra: float) -> str:
        """Kill `extra` seconds after the run's transaction started writing."""
        if copies.wal_bytes():
            copies.restore()  # the state is `before`: only the dead run's frames go
        with copies.writing() as writing:
            proc = leansync_sync(database_url, payloads[2])
            seen = wait_until(proc, writing)
            time.sleep(extra)
            kill(proc)
        return outcome(proc, f"{extra:.2f} s after the transaction started writing", writing_seen=seen)

    # One kill in each tenth of the run's duration, at a random point in it.
    rng = random.Random(SEED)
    outcomes = {f"{d:.3f} s": kill_at(d) for d in (duration * (i + rng.random()) / KILLS for i in range(KILLS))}
    # Then inside the write transaction, whatever the machine's load: at its
    # first write, and at random moments up to a quarter of the run later
    # (where a kill may also come after the commit).
    for extra in (0.0, *(rng.uniform(0, duration / 4) for _ in range(WRITING_KILLS - 1))):
        outcomes[f"writing + {extra:.3f} s"] = kill_while_writing(extra)
    print(f"\nkills over {duration:.2f} s: {outcomes}", file=sys.stderr)
    assert "before, mid-write" in outcomes.values(), f"no kill landed inside the transaction: {outcomes}"

    # Whatever the kills left behind, the next run completes and lands exactly like the reference.
    completed_in_process(database_url, payloads[2])
    check_invariants(database_url)
    assert snapshot(database_url) == after


@pytest.mark.slow
def test_sigkill_during_the_first_run_leaves_no_partial_schema_or_data(database_url, request, tmp_path,
                                                                       tag_versions):
    """Killed while it creates the schema or writes the first rows, a new
    database holds no rows at all (the schema may or may not exist); the
    next run then migrates and syncs as if nothing had happened.

    Kills are spread over an uninterrupted first run's duration; if none
    landed between the migration's commit and the data's, more halve the gap
    between the latest kill that left no schema and the earliest later one
    that left the complete state."""
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(response(tag_versions)))
    copies = Copies(database_url, request, tmp_path)
    copies.save()  # no database yet (SQLite), an empty one (PostgreSQL)
    reference = copies.copy_of_pristine()
    duration = completed(reference, payload)
    check_invariants(reference)
    complete = snapshot(reference)
    assert len(complete["lean_version"]) == 1 + len(tag_versions)  # column names, then rows
    assert [r["status"] for r in complete["sync_run"]] == ["success"]
    no_rows = {table: rows[:1] for table, rows in complete.items()} | {"sync_run": []}
    resumed = False

    def kill_at(delay: float) -> str:
        nonlocal resumed
        copies.restore()
        proc = leansync_sync(database_url, payload)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        if not has_schema(database_url):
            return "no schema"  # killed before the migration committed: nothing at all
        check_integrity(database_url)
        state = snapshot(database_url)
        if state == complete:
            return "complete"  # it committed before the kill
        assert state == no_rows, (f"a kill after {delay:.2f} s of {duration:.2f} s (exit {proc.returncode}, "
                                  f"{err.decode().strip()!r}) left rows: neither empty nor complete")
        if not resumed:
            completed_in_process(database_url, payload)
            check_invariants(database_url)
            assert snapshot(database_url) == complete
            resumed = True
        return "schema, no rows"

    rng = random.Random(SEED)
    outcomes = {d: kill_at(d) for d in (duration * (i + rng.random()) / FIRST_RUN_KILLS
                                        for i in range(FIRST_RUN_KILLS))}
    for _ in range(FIRST_RUN_MORE_KILLS):
        if "schema, no rows" in outcomes.values():
            break
        low = max((d for d, o in outcomes.items() if o == "no schema"), default=0.0)
        high = min((d for d, o in outcomes.items() if o == "complete" and d > low), default=low + duration)
        outcomes[(low + high) / 2] = kill_at((low + high) / 2)
    print(f"\nfirst-run kills over {duration:.2f} s: {sorted(outcomes.items())}", file=sys.stderr)
    assert "schema, no rows" in outcomes.values(), (
        f"no kill landed between the migration's commit and the data's: {sorted(outcomes.items())}")
    assert resumed
