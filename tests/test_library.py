"""The Python API (leansync.run_sync, leansync.export), called directly as an orchestrator would.

No output, no exit, no logging configuration; documented exceptions that
carry the command line's exit codes.
"""

import dataclasses
import inspect
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

import leansync
from dbstate import has_schema
from leansync.store.database import make_engine
from leansync.history.lock import run_lock
from qc_server import DEFAULT_TOKEN, FakeQuantConnect, Reply
from samples import response

UTC = timezone.utc
T1 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
COUNTS = ("versions_seen", "inserted", "updated", "unchanged", "removed", "restored", "new_hashes")


@pytest.fixture
def saved(tmp_path, tag_versions):
    """saved(versions) -> the path of a response file holding them."""
    counter = iter(range(1000))

    def write(versions):
        path = tmp_path / f"saved-{next(counter)}.json"
        path.write_text(json.dumps(response(versions)))
        return path

    return write


def test_top_level_names_are_lazy():
    code = ("import sys, leansync; assert 'sqlalchemy' not in sys.modules; "
            "leansync.run_sync; leansync.export; leansync.LockTimeout; assert 'leansync.library' in sys.modules; "
            "print(sorted(n for n in dir(leansync) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = set(eval(out))
    assert {"run_sync", "export", "SyncResult", "LeansyncError", "ConfigError", "LockTimeout"} <= names
    with pytest.raises(AttributeError):
        leansync.no_such_name  # noqa: B018


def test_errors_share_a_base_class_and_carry_exit_codes():
    assert leansync.ConfigError.exit_code == 2
    assert leansync.LockTimeout.exit_code == 75
    for error in (leansync.FetchError, leansync.AuthError, leansync.PayloadError, leansync.GuardError,
                  leansync.DatabaseError):
        assert error.exit_code == 1
    for error in (leansync.ConfigError, leansync.SchemaError, leansync.LockTimeout, leansync.FetchError,
                  leansync.AuthError, leansync.PayloadError, leansync.GuardError, leansync.DatabaseError):
        assert issubclass(error, leansync.LeansyncError)


def test_run_sync_from_a_file_returns_a_frozen_result_and_prints_nothing(database_url, saved, tag_versions, capfd):
    handlers = list(logging.getLogger().handlers)
    with freeze_time(T1):
        first = leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:5]))
    changed = [dict(v) for v in tag_versions[:4]]
    changed[0]["ref"] = "release"
    with freeze_time(T2):
        second = leansync.run_sync(database_url=database_url, from_file=str(saved(changed)))

    assert isinstance(first, leansync.SyncResult)
    assert (first.run_id, first.dry_run, first.status) == (1, False, "success")
    assert {name: getattr(first, name) for name in COUNTS} == {
        "versions_seen": 5, "inserted": 5, "updated": 0, "unchanged": 0, "removed": 0, "restored": 0,
        "new_hashes": 2 * len({v["leanHash"] for v in tag_versions[:5]})}  # lean and cloud hash of each commit
    assert second.run_id == 2
    assert second.counts() == {"versions_seen": 4, "inserted": 0, "updated": 1, "unchanged": 3, "removed": 1,
                               "restored": 0, "new_hashes": 0}
    assert second.changes == ({"action": "update", "id": tag_versions[0]["id"], "changed_fields": ["ref"]},
                              {"action": "remove", "id": tag_versions[4]["id"]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.run_id = 3
    assert capfd.readouterr() == ("", "")
    assert logging.getLogger().handlers == handlers


def test_a_run_lists_the_changes_its_dry_run_planned(database_url, saved, tag_versions):
    """A real run keeps only ids and reads its new hashes back from the database; its
    changes are still the dry run's, in the same order (hashes in code point order)."""
    values = ["alpha", "Zeta", "_under", "Ärger", "zz top", "Alpha"]
    odd = [dict(tag_versions[i], leanHash=value, leanCloudHash=value.upper()) for i, value in enumerate(values)]
    path = saved(odd + tag_versions[6:40])
    planned = leansync.run_sync(database_url=database_url, from_file=path, dry_run=True)
    done = leansync.run_sync(database_url=database_url, from_file=path)
    expected = tuple(planned.changes)
    assert done.counts() == planned.counts() and len(done.changes) == len(expected)
    assert done.changes == expected and list(done.changes) == list(expected)
    hashes = [c for c in expected if c["action"] == "new_hash"]
    assert [c["hash"] for c in hashes if c["kind"] == "lean" and c["hash"] in values] == [
        "Alpha", "Zeta", "_under", "alpha", "zz top", "Ärger"]
    assert done.changes[-1] == expected[-1] and done.changes[35:45] == expected[35:45]
    with pytest.raises(IndexError):
        done.changes[len(expected)]


def test_dry_run_writes_nothing(database_url, saved, tag_versions):
    result = leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:3]), dry_run=True)
    assert (result.run_id, result.dry_run, result.status, result.inserted) == (None, True, "dry_run", 3)
    commits = len({v["leanHash"] for v in tag_versions[:3]})
    assert [c["action"] for c in result.changes] == ["insert"] * 3 + ["new_hash"] * 2 * commits
    assert not has_schema(database_url)  # no SQLite file, no PostgreSQL tables


def test_a_failed_run_raises_with_its_run_id(database_url, saved, tag_versions, tmp_path):
    leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:4]))
    bad = tmp_path / "bad.json"
    bad.write_text("<html>busy</html>")
    with pytest.raises(leansync.PayloadError) as caught:
        leansync.run_sync(database_url=database_url, from_file=bad)
    assert caught.value.exit_code == 1
    assert caught.value.run_id == 2
    with pytest.raises(leansync.GuardError) as caught:
        leansync.run_sync(database_url=database_url, from_file=saved([]))
    assert caught.value.run_id == 3
    with pytest.raises(leansync.GuardError) as caught:
        leansync.run_sync(database_url=database_url, from_file=saved([]), dry_run=True)
    assert caught.value.dry_run_result.removed == 4
    assert leansync.run_sync(database_url=database_url, from_file=saved([]), allow_mass_removal=True).removed == 4


def test_a_busy_lock_is_lock_timeout(database_url, saved, tag_versions):
    leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:2]))
    engine = make_engine(database_url)
    try:
        with run_lock(engine, timeout=0):
            with pytest.raises(leansync.LockTimeout) as caught:
                leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:3]), lock_timeout=0.1)
    finally:
        engine.dispose()
    assert caught.value.exit_code == 75
    assert not isinstance(caught.value, leansync.ConfigError)


def test_configuration_errors(database_url, saved, tag_versions, monkeypatch):
    with pytest.raises(leansync.ConfigError, match="no QuantConnect credentials"):
        leansync.run_sync(database_url=database_url)
    with pytest.raises(leansync.ConfigError, match="needs a saved response"):
        leansync.run_sync(database_url=database_url, observed_at=T1)
    with pytest.raises(leansync.ConfigError, match="timezone-aware"):
        leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:1]),
                          observed_at=datetime(2026, 3, 1))
    with pytest.raises(leansync.ConfigError, match="malformed"):
        leansync.run_sync(database_url="not a url", from_file=saved(tag_versions[:1]))


def test_run_sync_calls_the_api(database_url, tag_versions, monkeypatch):
    with FakeQuantConnect(versions=tag_versions[:7]) as qc:
        for name, value in qc.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("LEANSYNC_DATABASE_URL", database_url)  # the default, as on the command line
        result = leansync.run_sync(retries=0, timeout=5)
        qc.reply(Reply(status=503))
        with pytest.raises(leansync.FetchError) as caught:
            leansync.run_sync(retries=0, timeout=5)
    assert result.inserted == 7 and result.run_id == 1
    assert caught.value.run_id == 2 and DEFAULT_TOKEN not in str(caught.value)
    assert qc.problems == []


def test_run_sync_bounds_the_fetch_by_size(database_url, tag_versions, monkeypatch):
    with FakeQuantConnect(versions=tag_versions[:200]) as qc:
        for name, value in qc.env().items():
            monkeypatch.setenv(name, value)
        with pytest.raises(leansync.FetchError, match=r"more than the size cap of 0\.0099") as caught:
            leansync.run_sync(database_url=database_url, retries=0, max_response_mb=0.01)
        result = leansync.run_sync(database_url=database_url, retries=0, deadline=30, max_response_mb=1)
    assert caught.value.run_id == 1
    assert result.inserted == 200


def test_a_credentials_warning_goes_to_on_warning(database_url, saved, tag_versions, isolated_env, tmp_path):
    credentials = isolated_env / ".lean" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"user-id": "1", "api-token": "x"}))
    credentials.chmod(0o644)
    warnings: list[str] = []
    with FakeQuantConnect(versions=[], user_id="1", token="x") as qc:
        leansync.run_sync(database_url=database_url, api_url=qc.url, retries=0, on_warning=warnings.append)
    assert warnings == [f"{credentials} is readable by other users; fix it with: chmod 600 {credentials}"]


def test_observed_at_backfills(database_url, saved, tag_versions):
    with freeze_time(T2 + timedelta(days=30)):
        first = leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:2]), observed_at=T1)
        with pytest.raises(leansync.ConfigError, match="not later than the newest successful run"):
            leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:3]), observed_at=T1)
        second = leansync.run_sync(database_url=database_url, from_file=saved(tag_versions[:3]), observed_at=T2)
    assert (first.run_id, second.run_id, second.inserted) == (1, 2, 1)


def test_the_functions_are_keyword_only_and_typed():
    for function in (leansync.run_sync, leansync.export):
        parameters = inspect.signature(function).parameters.values()
        assert parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
        assert all(p.annotation is not inspect.Parameter.empty for p in parameters)
    with pytest.raises(TypeError):
        leansync.run_sync("sqlite:///x.db")
