"""End to end: the installed `leansync` command against a real local HTTP
server that authenticates like QuantConnect (tests/qc_server.py)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from leansync import __version__
from qc_server import HASH_MISMATCH, USER_ID_INVALID, FakeQuantConnect, expected_authorization

LEANSYNC = Path(sys.executable).parent / "leansync"


@pytest.fixture
def qc(tag_versions):
    with FakeQuantConnect(versions=tag_versions[:200]) as server:
        yield server


def leansync(*args, env, cwd):
    assert LEANSYNC.exists(), f"the leansync console script is not installed next to {sys.executable}"
    return subprocess.run([str(LEANSYNC), *map(str, args)], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def query(url, sql):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).all()
    finally:
        engine.dispose()


def test_installed_command_syncs_from_the_api(qc, database_url, tmp_path):
    env = {**qc.env(), "LEANSYNC_DATABASE_URL": database_url}
    before = int(time.time())
    result = leansync("sync", "--json", env=env, cwd=tmp_path)
    after = int(time.time())

    assert result.returncode == 0, result.stderr
    assert qc.problems == []
    assert json.loads(result.stdout)["inserted"] == 200
    assert query(database_url, "SELECT count(*) FROM lean_version") == [(200,)]
    assert query(database_url, "SELECT status, source FROM sync_run") == [("success", qc.url + "lean/versions/read")]

    # The request, checked here too (not only by the server): one POST, signed as QuantConnect expects.
    [request] = qc.requests
    assert request.method == "POST"
    assert request.path == "/api/v2/lean/versions/read"
    timestamp = request.headers["Timestamp"]
    assert timestamp.isdigit() and before - 1 <= int(timestamp) <= after + 1
    assert request.headers["Authorization"] == expected_authorization(qc.user_id, qc.token, timestamp)
    assert request.headers["User-Agent"].startswith(f"leansync/{__version__}")
    assert qc.token not in result.stdout + result.stderr

    # A second run from cron: nothing new, so -q prints nothing at all.
    again = leansync("sync", "-q", env=env, cwd=tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert qc.count == 2
    assert query(database_url, "SELECT count(*) FROM lean_version_history") == [(200,)]


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["plain", "verbose"])
def test_installed_command_reports_a_wrong_token(qc, tmp_path, verbose):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    wrong = "wrong-token-e2e-3f9a0c"
    env = {**qc.env(QUANTCONNECT_API_TOKEN=wrong), "LEANSYNC_DATABASE_URL": url}
    result = leansync(*verbose, "sync", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert qc.count == 1  # a rejection is not retried
    assert qc.problems == ["Authorization hash does not match the token and Timestamp"]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("leansync: error: ")
    assert "rejected" in last_line and "clock" in last_line
    assert "QUANTCONNECT_API_TOKEN" in last_line  # where the credentials came from
    if not verbose:
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert wrong not in result.stdout + result.stderr
    assert query(url, "SELECT count(*) FROM lean_version") == [(0,)]
    [(status, error)] = query(url, "SELECT status, error FROM sync_run")
    assert status == "failed" and "rejected" in error and wrong not in error


# -- the fake itself: it must refuse what QuantConnect refuses ------------------------

def _post(qc, *, user_id=None, token=None, timestamp=None, signed_at=None, method="POST", path="lean/versions/read",
          user_agent=f"leansync/{__version__}"):
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = timestamp if signed_at is None else signed_at
    headers = {"Timestamp": str(timestamp), "User-Agent": user_agent,
               "Authorization": expected_authorization(user_id or qc.user_id, token or qc.token, signed)}
    return requests.request(method, qc.url + path, json={}, headers=headers, timeout=10)


def test_fake_accepts_a_correct_signature(qc):
    answer = _post(qc)
    assert answer.status_code == 200 and answer.json()["success"] is True
    assert len(answer.json()["versions"]) == 200
    assert qc.problems == []


@pytest.mark.parametrize("kwargs, error", [
    ({"token": "not-the-token"}, HASH_MISMATCH),
    ({"signed_at": 1_000_000_000}, HASH_MISMATCH),  # header and signature from different timestamps
    ({"timestamp": int(time.time()) - 3 * 3600}, HASH_MISMATCH),  # beyond the 7200 s QuantConnect allows
    ({"user_id": "1"}, USER_ID_INVALID),
], ids=["wrong-token", "mismatched-timestamp", "stale-timestamp", "wrong-user"])
def test_fake_rejects_like_quantconnect(qc, kwargs, error):
    answer = _post(qc, **kwargs)
    assert answer.status_code == 200
    assert answer.json() == {"success": False, "errors": [error]}
    assert len(qc.problems) == 1


@pytest.mark.parametrize("kwargs, status", [
    ({"method": "GET"}, 405),
    ({"path": "projects/read"}, 404),
    ({"user_agent": "python-requests/2"}, 400),
])
def test_fake_refuses_the_wrong_request(qc, kwargs, status):
    assert _post(qc, **kwargs).status_code == status
    assert len(qc.problems) == 1
