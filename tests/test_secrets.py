"""The API token never leaks (reliability issue, item 8).

`leansync sync` runs with a distinctive token through every path: success,
rejected credentials, a persistent HTTP 500, a timeout, a bad payload, each
plain, with --json, and with -v (debug logs of requests and tracebacks of
failures). The token must appear in no stdout, no stderr (where the logs go),
no exception text and no table; the Authorization header built from it
(replayable for two hours) must not appear either. ~/.lean/credentials
readable by others gets a one-line warning with the chmod 600 fix, silent
under -q.

-v configures logging for the whole process, so every -v case runs through
the installed command. Plain and --json cases run in this process as `main()`
runs them (tests/main_in_process.py: its stderr log handler, and no secret
registered for masking by an earlier command).
"""

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from dbstate import full_dump_text, is_sqlite, runs
from leansync.source.api import fetch_versions
from leansync.config import load_credentials
from leansync.store.database import sqlite_path
from leansync.errors import LeansyncError
from main_in_process import leansync_in_process
from qc_server import FakeQuantConnect, Reply

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
TOKEN = "SECRET-token-5b0d8e1f9a7c4d2e"
USER_ID = "918273"


@pytest.fixture
def qc(tag_versions):
    with FakeQuantConnect(versions=tag_versions[:30], user_id=USER_ID, token=TOKEN) as server:
        yield server


def leansync(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LEANSYNC, "--database-url", url, *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def in_process(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url, env=env)


def scenarios(qc):
    """(name, set-up of the fake server, extra sync options, expected exit code)."""
    def server_token(token):
        def setup():
            qc.token = token
        return setup

    def default(reply):
        def setup():
            qc.default = reply
        return setup

    bad_item = dict(qc.versions[0], id="not-a-number")
    return [
        ("success", lambda: None, [], 0),
        ("rejected", server_token("the-token-the-server-expects"), [], 1),
        ("http-500", default(Reply(status=500)), ["--retries", "1"], 1),
        ("timeout", default(Reply(delay=5)), ["--timeout", "0.3", "--retries", "1"], 1),
        ("bad-payload", default(Reply(json={"success": True, "versions": [bad_item]})), [], 1),
    ]


@pytest.mark.slow
def test_the_token_appears_in_no_output_and_no_table(qc, database_url, isolated_env):
    outputs = []
    for name, setup, options, code in scenarios(qc):
        # In-process for the plain and --json outputs; the installed command for
        # -v, whose debug logging and tracebacks are configured process-wide.
        for flags in ([], ["--json"], ["-v", "--json"]):
            qc.token, qc.default = TOKEN, Reply()
            setup()
            env = qc.env(QUANTCONNECT_API_TOKEN=TOKEN)
            where = f"{name} {flags}"
            if "-v" in flags:
                result = leansync(database_url, "sync", *flags, *options, env=env)
                assert "leansync: urllib3" in result.stderr, where  # the debug logs were on
                assert ("Traceback" in result.stderr) == bool(code), where
            else:
                result = in_process(database_url, "sync", *flags, *options, env=env)
            returncode, text = result.returncode, result.stdout + result.stderr
            assert returncode == code, f"{where}: {text}"
            outputs.append((where, text))

    # The Lean CLI's credentials file, with its permission warning.
    credentials = isolated_env / ".lean" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"user-id": USER_ID, "api-token": TOKEN}))
    credentials.chmod(0o644)
    qc.token, qc.default = TOKEN, Reply()
    result = leansync(database_url, "sync", "-v", env={"QUANTCONNECT_API_URL": qc.url})
    assert result.returncode == 0, result.stderr
    assert "chmod 600" in result.stderr
    outputs.append(("credentials file -v", result.stdout + result.stderr))

    sent = {r.headers["Authorization"].split()[1] for r in qc.requests}
    assert len(qc.requests) >= 20
    for where, text in outputs:
        assert TOKEN not in text, f"the token leaked in the output of: {where}"
        assert not any(header in text for header in sent), f"the Authorization header leaked in: {where}"

    dump = full_dump_text(database_url)
    assert "failed" in dump and "success" in dump  # the dump does hold the runs' rows
    assert TOKEN not in dump
    assert not any(header in dump for header in sent)
    if is_sqlite(database_url):
        path = sqlite_path(database_url)
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                assert TOKEN.encode() not in file.read_bytes(), f"the token is in the bytes of {file}"
    assert {r["status"] for r in runs(database_url)} == {"success", "failed"}


def test_exceptions_do_not_carry_the_token(qc, monkeypatch):
    monkeypatch.setenv("QUANTCONNECT_USER_ID", USER_ID)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", TOKEN)
    credentials = load_credentials()
    assert TOKEN not in repr(credentials) and TOKEN not in str(credentials)
    qc.token = "another"
    for reply in (Reply(), Reply(status=500), Reply(body="<html/>"), Reply(delay=5)):
        qc.default = reply
        with pytest.raises(LeansyncError) as caught:
            document = fetch_versions(api_url=qc.url, credentials=credentials, timeout=0.3, retries=0)
            pytest.fail(f"expected a failure, got {document}")
        text = "".join(traceback.format_exception(caught.value))
        assert TOKEN not in text and TOKEN not in repr(caught.value)


# -- the permission warning ---------------------------------------------------------

@pytest.fixture
def credentials_file(isolated_env, qc):
    path = isolated_env / ".lean" / "credentials"
    path.parent.mkdir()
    path.write_text(json.dumps({"user-id": USER_ID, "api-token": TOKEN}))
    return path


def warning_for(path: Path) -> str:
    return f"leansync: warning: {path} is readable by other users; fix it with: chmod 600 {path}\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o444])
def test_credentials_readable_by_others_get_one_warning_line(run, qc, credentials_file, mode):
    credentials_file.chmod(mode)
    result = run("sync", "--api-url", qc.url)
    assert result.exit_code == 0
    assert result.stderr == warning_for(credentials_file)
    assert TOKEN not in result.output


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o620])
def test_private_credentials_get_no_warning(run, qc, credentials_file, mode):
    credentials_file.chmod(mode)
    result = run("sync", "--api-url", qc.url)
    assert (result.exit_code, result.stderr) == (0, "")


def test_the_warning_is_silent_under_quiet(run, qc, credentials_file):
    """cron mails whatever a job prints: -q with nothing new prints nothing at all."""
    credentials_file.chmod(0o644)
    assert run("sync", "-q", "--api-url", qc.url).exit_code == 0  # first run: news, printed
    again = run("sync", "-q", "--api-url", qc.url)
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")


def test_the_warning_keeps_json_output_clean(run, qc, credentials_file):
    credentials_file.chmod(0o644)
    result = run("sync", "--json", "--api-url", qc.url)
    assert json.loads(result.stdout)["status"] == "success"
    assert result.stderr == warning_for(credentials_file)


# -- passwords in the database URL and credentials in the API URL (issue 15) ----------

DB_PASSWORD = "dbPASS-7c1e9a3f5b"
USERINFO_PASSWORD = "infoPASS-2d8b6f04"
GATEWAY_PASSWORD = "gwPASS-93a1c7e5d2"
QUERY_TOKEN = "queryTOKEN-51f0b8c2"
SECRETS = (TOKEN, DB_PASSWORD, USERINFO_PASSWORD, GATEWAY_PASSWORD, QUERY_TOKEN)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked in {where}: {text[:2000]}"


def with_password(url: str) -> list[str]:
    """The test server's URL (trust authentication: any password is accepted) with a password
    as a query parameter, and in the user info."""
    user_info = url.replace("postgres@", f"postgres:{USERINFO_PASSWORD}@", 1)
    return [f"{url}?password={DB_PASSWORD}", f"{user_info}?sslmode=disable"]


READ_COMMANDS = [["versions", "--limit", "3"], ["show", "17453"], ["show", "1"], ["hashes"],
                 ["changes", "--since", "30d"], ["runs"], ["check", "--max-age", "1h"], ["metrics"],
                 ["export"], ["db", "current"], ["datasette-metadata"]]


@pytest.mark.postgres_only
@pytest.mark.slow
def test_a_database_password_is_masked_by_every_command(database_url, write_response, tag_versions,
                                                        postgres_cluster, tmp_path):
    """Every command that names the database, with -v (its logs and tracebacks), check's line included.

    The -v runs go through the installed command; the plain ones run in this process as `main()` runs them.
    """
    as_query, as_user_info = with_password(database_url)
    response = write_response(tag_versions[:20])
    bad = tmp_path / "bad.json"
    bad.write_text('{"success": true, "versions": [{"id": "x"}]}')
    commands = [["sync", "--from-file", str(response)], ["sync", "--from-file", str(bad)],
                ["sync", "--dry-run", "--from-file", str(response)], ["db", "upgrade"], *READ_COMMANDS,
                ["db", "copy", "--to", as_query]]  # refused: the target holds runs
    outputs = []
    for command in commands:
        result = leansync(as_query, "-v", *command)
        outputs.append((str(command), result.stdout + result.stderr))
    for command in (["db", "current"], ["check", "--max-age", "1h"], ["show", "1"]):
        result = in_process(as_user_info, *command)
        outputs.append((f"user info {command}", result.stdout + result.stderr))
    # An unreachable server and a missing database name the URL in their one sentence.
    for broken in (as_query.replace(f":{postgres_cluster.port}/", ":1/"), as_user_info.replace("/test_", "/nodb_")):
        for command in (["check", "--max-age", "1h"], ["-v", "sync", "--from-file", str(response)]):
            result = (leansync if "-v" in command else in_process)(broken, *command)
            assert result.returncode in (2, 3) if command[0] == "check" else result.returncode == 1, result.stderr
            outputs.append((f"unreachable {command}", result.stdout + result.stderr))
    outputs.append(("metrics", in_process(as_query, "metrics").stdout))

    shown = "\n".join(text for _, text in outputs)
    assert "password=***" in shown and "postgres:***@" in shown  # the URLs were shown, masked
    assert "leansync: alembic.runtime.migration" in shown and "Traceback" in shown  # -v's logs and tracebacks
    for where, text in outputs:
        assert_no_secret(where, text)
    assert {r["status"] for r in runs(database_url)} == {"success", "failed"}
    assert_no_secret("the database", full_dump_text(database_url))


def test_credentials_in_the_api_url_are_masked_everywhere(qc, database_url, isolated_env, monkeypatch):
    """A gateway's basic auth and a token in the query: never in output, -v logs, tracebacks or sync_run.

    The -v runs go through the installed command; the others run in this process as `main()` runs them.
    """
    import leansync as library

    qc.default = Reply(status=500)
    base = qc.url.replace("http://", "")
    api_urls = [f"http://gw:{GATEWAY_PASSWORD}@{base}", f"{qc.url}?token={QUERY_TOKEN}"]
    outputs = []
    for api_url in api_urls:
        env = qc.env(QUANTCONNECT_API_TOKEN=TOKEN, QUANTCONNECT_API_URL=api_url)
        for flags in (["-v"], ["-v", "--json"], ["--json"], []):
            result = (leansync if "-v" in flags else in_process)(database_url, "sync", *flags, "--retries", "0",
                                                                 env=env)
            assert result.returncode == 1, result.stderr
            outputs.append((f"sync {flags}", result.stdout + result.stderr))
            if "-v" in flags:  # the logs and the traceback were on
                assert "leansync: urllib3" in result.stderr and "Traceback" in result.stderr, result.stderr
        monkeypatch.setenv("QUANTCONNECT_API_TOKEN", TOKEN)
        with pytest.raises(library.FetchError) as caught:
            library.run_sync(database_url=database_url, api_url=api_url, user_id=USER_ID, retries=0)
        outputs.append(("exception", "".join(traceback.format_exception(caught.value))))
        outputs.append(("check", in_process(database_url, "check", "--max-age", "1h").stdout))
        outputs.append(("runs", in_process(database_url, "runs", "--format", "json").stdout))
        outputs.append(("metrics", in_process(database_url, "metrics").stdout))

    assert any("gw:***@" in text for _, text in outputs) and any("token=***" in text for _, text in outputs)
    for where, text in outputs:
        assert_no_secret(where, text)
    stored = runs(database_url)
    assert len(stored) == 10 and {r["status"] for r in stored} == {"failed"}
    assert_no_secret("the database", full_dump_text(database_url))


def test_the_token_is_masked_once_loaded(monkeypatch):
    from leansync import masking

    monkeypatch.setattr(masking, "_registered", set())
    monkeypatch.setenv("QUANTCONNECT_USER_ID", USER_ID)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", TOKEN)
    assert TOKEN in masking.mask(f"echo {TOKEN}")  # not known yet
    load_credentials()
    assert masking.mask(f"a message quoting {TOKEN} bare") == "a message quoting *** bare"
