"""`leansync db copy --to URL`: a history moved to the other backend answers every query alike.

Each test copies from the ``database_url`` backend to the other one, so both
directions run (SQLite -> PostgreSQL and back). A full copy and a copy that
meets a lock held by another process go through the installed command; the
other copies run in this process as `main()` runs them
(tests/main_in_process.py). The answers are compared in-process with a frozen
clock.
"""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from dbstate import has_schema, raw_rows
from leansync.cli import cli
from leansync.history.lock import run_lock
from leansync.store.database import make_engine
from leansync.store.models import metadata
from main_in_process import leansync_in_process

UTC = timezone.utc
TIMES = [datetime(2026, 3, day, 6, 0, tzinfo=UTC) for day in range(1, 7)]
LATER = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
LEANSYNC = Path(sys.executable).parent / "leansync"


@pytest.fixture
def other_url(database_url, request, tmp_path):
    """A fresh database on the other backend."""
    if database_url.startswith("sqlite"):
        return request.getfixturevalue("postgres_cluster").url(request.getfixturevalue("postgres_database"))
    return f"sqlite:///{tmp_path / 'copy' / 'other.db'}"


def cli_on(url, *args, at=LATER):
    with freeze_time(at):
        return invoke(url, *args)


def invoke(url, *args):
    """The command in this process (the clock as the caller left it)."""
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def db_copy(source, target, *args):
    """The installed command."""
    return subprocess.run([str(LEANSYNC), "--database-url", source, "db", "copy", "--to", target, *args],
                          capture_output=True, text=True, timeout=120)


def db_copy_in_process(source, target, *args):
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process("db", "copy", "--to", target, *args, url=source)


@pytest.fixture
def history(database_url, write_response, tag_versions):
    """Six runs: inserts, a change, a new unmodelled key, a removal, a failed run, a return."""
    base = [dict(v) for v in tag_versions[:6]]
    changed = [dict(v) for v in base]
    changed[2]["leanHash"] = "f" * 40
    changed[3]["description"] = None
    extra = [dict(v, notes="beta") if v["id"] == base[1]["id"] else v for v in changed]
    steps = [base, changed, extra, extra[:-1], None, extra]
    for at, versions in zip(TIMES, steps):
        path = write_response(versions) if versions is not None else write_response(document={"oops": 1})
        result = cli_on(database_url, "sync", "--from-file", path, at=at)
        assert result.exit_code == (1 if versions is None else 0), result.output
    return database_url


def answers(url) -> dict:
    """Each query's JSON answer, parsed: jsonb keeps the keys of `raw` but not their order.

    The clock stands still at LATER for every query (one freeze, not one per query: each costs a walk
    over every loaded module).
    """
    out = {}
    with freeze_time(LATER):
        for n, at in enumerate(TIMES):
            for moment in (at - timedelta(microseconds=1), at):
                out[f"as-of {n} {moment}"] = invoke(url, "versions", "--as-of", moment.isoformat(), "--format",
                                                    "json").output
        out["versions --all"] = invoke(url, "versions", "--all", "--format", "json").output
        out["changes"] = invoke(url, "changes", "--since", "2026-01-01", "--format", "json").output
        out["hashes"] = invoke(url, "hashes", "--format", "json").output
        out["runs"] = invoke(url, "runs", "--format", "json").output
        out["show"] = invoke(url, "show", "18024", "--format", "json").output
        check = invoke(url, "check", "--max-age", "7d")
    out = {name: json.loads(text) for name, text in out.items()}
    out["check"] = (check.exit_code, check.output)
    return out


def test_a_copy_answers_every_query_alike_and_takes_the_next_sync(history, other_url, write_response,
                                                                   tag_versions):
    before = raw_rows(history)
    result = db_copy(history, other_url)
    assert result.returncode == 0, result.stderr
    rows = ", ".join(f"{len(before[t.name][1])} {t.name}" for t in metadata.sorted_tables)
    assert result.stdout == f"copied {history} to {other_url}: {rows}\n"
    assert "6 sync_run" in rows
    assert raw_rows(history) == before  # the source is untouched

    expected = answers(history)
    assert expected["runs"][1]["status"] == "failed"  # the history has what it should
    assert answers(other_url) == expected

    # The next sync into the target continues the ids (PostgreSQL's sequences were advanced).
    path = write_response([dict(v, ref="release") for v in tag_versions[:7]])
    for url in (history, other_url):
        result = cli_on(url, "sync", "--from-file", path, "--json", at=LATER)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["run_id"] == 7
    assert answers(other_url) == answers(history)


def test_a_target_with_a_run_is_refused(history, other_url, write_response, tag_versions):
    assert cli_on(other_url, "sync", "--from-file", write_response(tag_versions[:1])).exit_code == 0
    before = raw_rows(other_url)
    result = db_copy_in_process(history, other_url, "-q")
    assert result.returncode == 2
    assert result.stderr.startswith("leansync: error: ")
    assert "already holds 1 sync run(s); db copy fills only a database without history, nothing was " \
           "written" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert raw_rows(other_url) == before


def test_an_empty_history_copies_nothing_but_the_schema(database_url, other_url):
    assert cli_on(database_url, "db", "upgrade").exit_code == 0
    result = db_copy_in_process(database_url, other_url, "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert has_schema(other_url)
    assert json.loads(cli_on(other_url, "runs", "--format", "json").output) == []


def test_a_missing_source_is_an_error_and_creates_nothing(tmp_path, other_url):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    result = db_copy_in_process(missing, other_url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"leansync: error: no leansync database at {missing}")
    assert not (tmp_path / "missing.db").exists()
    assert not has_schema(other_url)


def test_a_busy_target_lock_is_exit_75(history, other_url):
    """The lock held here, the copy in another process: the installed command."""
    assert cli_on(other_url, "db", "upgrade").exit_code == 0
    engine = make_engine(other_url)
    try:
        with run_lock(engine, timeout=0):
            result = db_copy(history, other_url, "--lock-timeout", "0.2")
    finally:
        engine.dispose()
    assert result.returncode == 75, result.stderr
    assert json.loads(cli_on(other_url, "runs", "--format", "json").output) == []
