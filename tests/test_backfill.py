"""`sync --from-file PATH --observed-at WHEN`: a saved response recorded as seen at WHEN.

The installed command replays the README's git-scraping loop and reads a
saved response from a real stdin pipe; the other cases run in this process as
`main()` runs them (tests/main_in_process.py), and where "now" matters, with a
frozen clock. WHEN lies in the past elsewhere, so no clock needs freezing.
"""

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time

from dbstate import check_invariants, has_schema, raw_rows, runs
from leansync import read
from leansync.read import open_database
from main_in_process import leansync_in_process

UTC = timezone.utc
T1 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
T3 = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
LEANSYNC = Path(sys.executable).parent / "leansync"
HISTORY_DOC = (Path(__file__).resolve().parent.parent / "docs" / "history.md").read_text(encoding="utf-8")


def leansync(url, *args, input=None, cwd=None):
    """The installed command."""
    return subprocess.run([str(LEANSYNC), "--database-url", url, *map(str, args)], input=input, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def in_process(url, *args, input=None):
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url, input=input)


def as_of(url, when):
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            return read.versions_as_of(conn, when)
    finally:
        engine.dispose()


@pytest.fixture
def saved(write_response, tag_versions):
    """Three saved responses: 4 versions; one changed and one new; one removed."""
    first = tag_versions[1:5]
    second = [dict(tag_versions[0])] + [dict(v) for v in first]
    second[1]["description"] = "edited"
    third = second[:-1]
    return [write_response(v) for v in (first, second, third)]


def test_backfill_dates_every_row_at_when(database_url, saved):
    for path, when in zip(saved, ("2026-03-01T06:00", "2026-03-02T07:00+01:00", "2026-03-03T06:00:00Z")):
        result = in_process(database_url, "sync", "--from-file", path, "--observed-at", when, "--json")
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "success", "run_id": 3, "versions_seen": 4, "inserted": 0,
                                         "updated": 0, "unchanged": 4, "removed": 1, "restored": 0,
                                         "new_hashes": 0}

    recorded = runs(database_url)
    assert [r["started_at"] for r in recorded] == [T1, T2, T3]
    assert [r["source"] for r in recorded] == [str(p.resolve()) for p in saved]
    assert all(r["status"] == "success" and r["finished_at"] > r["started_at"] for r in recorded)
    assert len(as_of(database_url, T1 - timedelta(microseconds=1))) == 0
    assert len(as_of(database_url, T1)) == 4
    assert len(as_of(database_url, T2)) == 5
    assert len(as_of(database_url, T3)) == 4
    assert {r["valid_from"] for r in as_of(database_url, T3)} <= {T1, T2}
    changes = in_process(database_url, "changes", "--since", "2026-03-01", "--format", "json")
    assert {(e["event"], e["event_time"][:10]) for e in json.loads(changes.stdout)} >= {
        ("new_version", "2026-03-01"), ("changed", "2026-03-02"), ("removed", "2026-03-03")}


def test_a_when_not_later_than_every_run_is_refused(database_url, saved, tmp_path):
    first = in_process(database_url, "sync", "--from-file", saved[0], "--observed-at", "2026-03-01T06:00")
    assert first.returncode == 0, first.stderr
    before = raw_rows(database_url)
    for when, *dry in (("2026-03-01T07:00+01:00",), ("2026-02-28", "--dry-run")):  # equal, earlier
        result = in_process(database_url, "sync", "--from-file", saved[1], "--observed-at", when, *dry)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("leansync: error: --observed-at ")
        assert "not later than the newest successful run (run 1 at 2026-03-01T06:00:00Z)" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert raw_rows(database_url) == before

    # A failed backfill is recorded, but it wrote no history: the right file may follow at the same WHEN.
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    failed = in_process(database_url, "sync", "--from-file", bad, "--observed-at", "2026-03-02", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["run_id"] == 2
    assert runs(database_url)[-1]["started_at"] == T2.replace(hour=0)
    again = in_process(database_url, "sync", "--from-file", saved[1], "--observed-at", "2026-03-02")
    assert again.returncode == 0, again.stderr
    assert [(r["id"], r["status"], r["started_at"]) for r in runs(database_url)[1:]] == [
        (2, "failed", T2.replace(hour=0)), (3, "success", T2.replace(hour=0))]
    check_invariants(database_url)
    # ... and the successful one is the newest: the failure is behind it.
    check = in_process(database_url, "check", "--max-age", "99999d")
    assert check.returncode == 0 and "failed_runs=0" in check.stdout, check.stdout
    # Now that one wrote history, its WHEN is taken.
    taken = in_process(database_url, "sync", "--from-file", saved[2], "--observed-at", "2026-03-02")
    assert taken.returncode == 2
    assert "(run 3 at 2026-03-02T00:00:00Z)" in taken.stderr


def test_the_future_is_refused_without_tolerance(run, saved, database_url):
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    with freeze_time(now):
        future = run("sync", "--from-file", saved[0], "--observed-at", "2026-03-10T12:00:00.000001")
        assert future.exit_code == 2
        assert future.stderr == ("leansync: error: --observed-at 2026-03-10T12:00:00.000001Z is in the future; "
                                 "nothing was written\n")
        assert not has_schema(database_url)
        assert run("sync", "--from-file", saved[0], "--observed-at", "2026-03-10T12:00").exit_code == 0
    assert [r["started_at"] for r in runs(database_url)] == [now]


def test_observed_at_needs_from_file(run, database_url):
    result = run("sync", "--observed-at", "2026-03-01")
    assert result.exit_code == 2
    assert "--observed-at records a saved response: it needs --from-file" in result.stderr
    assert not has_schema(database_url)


@pytest.mark.sqlite_only
def test_observed_at_takes_a_valid_when(run):
    result = run("sync", "--from-file", "x.json", "--observed-at", "yesterday")
    assert result.exit_code == 2
    assert "'yesterday' is not a valid time" in result.stderr


def test_dry_run_and_stdin(database_url, saved):
    """The dry run in this process; the sync through the installed command, its stdin a real pipe."""
    text = saved[0].read_text()
    dry = in_process(database_url, "sync", "--from-file", "-", "--observed-at", "2026-03-01", "--dry-run", "--json",
                     input=text)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["status"] == "dry_run"
    assert not has_schema(database_url)
    real = leansync(database_url, "sync", "--from-file", "-", "--observed-at", "2026-03-01", input=text)
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("run 1: 4 versions listed; 4 new")
    assert [(r["source"], r["started_at"]) for r in runs(database_url)] == [("stdin", T1.replace(hour=0))]


def readme_replay_loop() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", HISTORY_DOC, re.S)
    [loop] = [b for b in blocks if "git log --reverse" in b]
    return loop


def git(repo: Path, *args, date: str | None = None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "scraper", "GIT_AUTHOR_EMAIL": "scraper@example.com",
           "GIT_COMMITTER_NAME": "scraper", "GIT_COMMITTER_EMAIL": "scraper@example.com"}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def test_the_readme_replays_a_git_scraping_repository(database_url, saved, tmp_path):
    loop = readme_replay_loop()
    repo = tmp_path / re.search(r"^cd (\S+)", loop, re.M).group(1)
    repo.mkdir()
    git(repo, "init", "-q")
    dates = ["2026-03-01T06:00:00+00:00", "2026-03-02T08:00:00+02:00", "2026-03-03T06:00:00+00:00"]
    for path, date in zip(saved, dates):
        (repo / "versions.json").write_text(path.read_text())
        (repo / "notes.txt").write_text(date)  # another file in the same commit
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"scrape {date}", date=date)
    git(repo, "commit", "-q", "--allow-empty", "-m", "not a scrape", date="2026-03-04T00:00:00+00:00")

    env = {**os.environ, "LEANSYNC_DATABASE_URL": database_url,
           "PATH": f"{LEANSYNC.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", loop], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert [(r["started_at"], r["status"]) for r in runs(database_url)] == [
        (T1, "success"), (T2, "success"), (T3, "success")]
    assert [len(as_of(database_url, t)) for t in (T1, T2, T3)] == [4, 5, 4]
