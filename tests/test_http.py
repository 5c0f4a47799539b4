"""HTTP reliability (reliability issue, items 1 and 3).

Timeouts, retries with backoff and jitter on connection errors, timeouts,
429 and 5xx, Retry-After honoured but capped at 60 s, no retry on other 4xx
or on `success: false`, a bounded end to a persistent failure with the HTTP
status in the message, and the messages for rejected credentials. Runs go
through the CLI against a real local server (tests/qc_server.py); the
retry policy itself is also checked on urllib3's Retry object, so that the
long waits need not be waited for.
"""

import json
import socket
import time
from email.utils import formatdate

import pytest
from urllib3 import HTTPResponse
from urllib3.util.retry import RequestHistory

from dbstate import data_tables, runs
from leansync.source.api import RETRY_AFTER_CAP, make_session
from qc_server import HASH_MISMATCH, USER_ID_INVALID, FakeQuantConnect, Reply

ENV_SOURCE = "the environment (QUANTCONNECT_USER_ID, QUANTCONNECT_API_TOKEN)"


@pytest.fixture
def qc(tag_versions):
    with FakeQuantConnect(versions=tag_versions[:20]) as server:
        yield server


@pytest.fixture
def sync(run, qc):
    """`leansync sync` against the fake server with its credentials in the environment."""

    def invoke(*args, env=None):
        return run("sync", *args, env={**qc.env(), **(env or {})})

    return invoke


def endpoint(qc) -> str:
    return qc.url + "lean/versions/read"


def error_line(result) -> str:
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("leansync: error: ")
    return result.stderr[len("leansync: error: "):-1]


# -- the retry policy, on urllib3's own object ---------------------------------

def retry_policy(retries: int = 4):
    return make_session(retries=retries).get_adapter("https://www.quantconnect.com/").max_retries


def after_failures(retry, n: int):
    return retry.new(history=tuple(RequestHistory("POST", "/", None, 503, None) for _ in range(n)))


def test_backoff_is_exponential_with_jitter():
    retry = retry_policy()
    assert after_failures(retry, 1).get_backoff_time() == 0  # the first retry goes at once
    for failures, base in ((2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)):
        waits = {after_failures(retry, failures).get_backoff_time() for _ in range(50)}
        assert all(base <= w <= base + 0.5 for w in waits), waits
        assert len(waits) > 1  # jitter: attempts of many clients do not line up
    assert after_failures(retry, 12).get_backoff_time() <= RETRY_AFTER_CAP


def answer(status: int, **headers) -> HTTPResponse:
    return HTTPResponse(body=b"", status=status, headers=headers, preload_content=True)


@pytest.mark.parametrize("value,expected", [
    ("0", 0), ("1", 1), ("59", 59), ("60", 60), ("61", 60), ("3600", 60), ("86400", 60),
])
def test_retry_after_is_honoured_up_to_a_minute(value, expected):
    assert retry_policy().get_retry_after(answer(503, **{"Retry-After": value})) == expected


def test_retry_after_as_a_date_is_capped_too():
    in_a_day = formatdate(time.time() + 86400, usegmt=True)
    assert retry_policy().get_retry_after(answer(429, **{"Retry-After": in_a_day})) == RETRY_AFTER_CAP
    assert retry_policy().get_retry_after(answer(429)) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_post_is_retried_on_429_and_5xx(status):
    assert retry_policy().is_retry("POST", status, has_retry_after=False)
    assert retry_policy().is_retry("POST", status, has_retry_after=True)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 422])
def test_other_4xx_are_final_even_with_retry_after(status):
    assert not retry_policy().is_retry("POST", status, has_retry_after=True)


def test_retries_option_sets_every_budget():
    retry = retry_policy(3)
    assert (retry.total, retry.connect, retry.read, retry.status) == (3, 3, 3, 3)


def test_defaults_are_30_s_and_4_retries(run):
    help_text = " ".join(run("sync", "--help").stdout.split())
    assert "HTTP connect and read timeout, seconds. [default: 30;" in help_text
    assert "Retries on connection errors, timeouts, 429 and 5xx. [default: 4;" in help_text
    assert "giving up (exit 75). [default: 600;" in help_text  # --lock-timeout: longer than the worst run


# -- retries against a real server --------------------------------------------------

@pytest.mark.parametrize("first", [
    Reply(status=500), Reply(status=502), Reply(status=503), Reply(status=504),
    Reply(status=429, headers={"Retry-After": "0"}), Reply(drop=True),
], ids=["500", "502", "503", "504", "429", "dropped"])
def test_a_transient_failure_is_retried(sync, qc, first):
    qc.reply(first)
    result = sync("--retries", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 20
    assert qc.count == 2 and qc.problems == []


def test_retry_after_is_waited_for(sync, qc, sleeps):
    qc.reply(Reply(status=429, headers={"Retry-After": "1"}))
    result = sync("--retries", "1")
    assert result.exit_code == 0, result.stderr
    assert qc.count == 2
    assert sleeps == [1]  # the server's wait, instead of the backoff (none before the first retry)


def test_a_long_retry_after_waits_a_minute_at_most(sync, qc, sleeps):
    qc.default = Reply(status=429, headers={"Retry-After": "7200"})
    result = sync("--retries", "3")
    assert result.exit_code == 1
    assert sleeps == [RETRY_AFTER_CAP] * 3
    assert qc.count == 4
    assert error_line(result) == f"QuantConnect at {endpoint(qc)} answered HTTP 429 (too many requests) after 4 attempts"


def test_a_persistent_server_error_ends_after_the_retries(sync, qc, sleeps, database_url):
    qc.default = Reply(status=500)
    result = sync("--retries", "4")
    assert result.exit_code == 1
    assert qc.count == 5
    # Exponential backoff: none before the first retry, then 1, 2, 4 s plus up to 0.5 s of jitter.
    assert len(sleeps) == 3 and all(b <= s <= b + 0.5 for s, b in zip(sleeps, (1, 2, 4))), sleeps
    message = error_line(result)
    assert message == (
        f"QuantConnect at {endpoint(qc)} answered HTTP 500 (server error) after 5 attempts; QuantConnect "
        f"also answers 500 to some invalid credentials, so check those read from {ENV_SOURCE}")
    assert runs(database_url)[-1]["error"] == message


def test_a_persistent_503_ends_after_the_retries_without_the_credentials_hint(sync, qc, sleeps):
    qc.default = Reply(status=503, headers={"Retry-After": "0"})
    result = sync("--retries", "2")
    assert result.exit_code == 1
    assert qc.count == 3
    # Retry-After: 0 asks for no wait, so the backoff applies: none, then 1 s plus jitter.
    assert len(sleeps) == 1 and 1 <= sleeps[0] <= 1.5, sleeps
    # Only a 500 hints at the credentials: a 502-504 comes from a proxy or an outage.
    assert error_line(result) == f"QuantConnect at {endpoint(qc)} answered HTTP 503 (server error) after 3 attempts"


@pytest.mark.parametrize("status", [501, 505])
def test_a_5xx_that_is_not_transient_is_not_retried(sync, qc, status):
    qc.default = Reply(status=status)
    result = sync("--retries", "3")
    assert result.exit_code == 1
    assert qc.count == 1
    assert error_line(result) == f"QuantConnect at {endpoint(qc)} answered HTTP {status} (server error)"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_not_retried(sync, qc, status, database_url):
    qc.default = Reply(status=status, headers={"Retry-After": "0"})
    result = sync("--retries", "3")
    assert result.exit_code == 1
    assert qc.count == 1
    assert f"answered HTTP {status}" in error_line(result)
    assert runs(database_url)[-1]["status"] == "failed"


def test_success_false_is_not_retried(sync, qc):
    qc.default = Reply(json={"success": False, "errors": ["Internal error"]})
    result = sync("--retries", "3")
    assert result.exit_code == 1
    assert qc.count == 1
    assert error_line(result).endswith("Internal error")


def test_a_read_timeout_is_retried(sync, qc):
    qc.reply(Reply(delay=5))
    result = sync("--timeout", "0.5", "--retries", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert qc.count == 2


def test_a_persistent_timeout_ends_with_a_clear_message(sync, qc, database_url):
    qc.default = Reply(delay=5)
    result = sync("--timeout", "0.5", "--retries", "1")
    assert result.exit_code == 1
    assert qc.count == 2
    assert error_line(result) == f"QuantConnect at {endpoint(qc)} did not answer within 0.5 s (2 attempts)"
    assert runs(database_url)[-1]["status"] == "failed"


def test_connection_refused_is_retried_then_reported(run, qc, database_url, sleeps):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v2/"
    result = run("sync", "--retries", "2", "--api-url", url, env=qc.env())
    assert result.exit_code == 1
    assert len(sleeps) == 1 and 1 <= sleeps[0] <= 1.5  # the backoff before the third attempt
    message = error_line(result)
    assert message.startswith(f"could not reach QuantConnect at {url}lean/versions/read after 3 attempts: ")
    assert "Connection refused" in message
    assert runs(database_url)[-1]["error"] == message


def test_a_failed_fetch_changes_no_data(sync, qc, database_url):
    assert sync().exit_code == 0
    before = data_tables(database_url)
    qc.versions = qc.versions[:5]  # would remove 15, if it arrived
    qc.default = Reply(status=502)
    assert sync("--retries", "0").exit_code == 1
    assert data_tables(database_url) == before
    assert [r["status"] for r in runs(database_url)] == ["success", "failed"]


# -- rejected credentials (item 3) --------------------------------------------------

def test_a_wrong_token_from_the_environment(sync, qc, database_url):
    result = sync("--retries", "3", env={"QUANTCONNECT_API_TOKEN": "not-the-right-token-41d7"})
    assert result.exit_code == 1
    assert qc.count == 1  # a rejection is final
    message = error_line(result)
    assert message == (
        f"QuantConnect rejected the credentials read from {ENV_SOURCE} ({HASH_MISMATCH}); check them, and "
        "check this machine's clock: a clock more than two hours off gets the same answer")
    assert "not-the-right-token-41d7" not in result.output
    assert runs(database_url)[-1]["error"] == message


def test_an_unknown_user_id_from_the_lean_cli_file(run, qc, isolated_env):
    credentials = isolated_env / ".lean" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"user-id": "777", "api-token": qc.token}))
    credentials.chmod(0o600)
    result = run("sync", "--api-url", qc.url)
    assert result.exit_code == 1
    assert error_line(result) == (
        f"QuantConnect rejected the credentials read from {credentials} ({USER_ID_INVALID}); check them, and "
        "check this machine's clock: a clock more than two hours off gets the same answer")
    assert qc.token not in result.output


@pytest.mark.parametrize("status", [401, 403])
def test_http_401_and_403_say_the_credentials_were_refused(sync, qc, status):
    qc.default = Reply(status=status)
    result = sync()
    assert error_line(result) == (f"QuantConnect at {endpoint(qc)} answered HTTP {status}: the credentials "
                                  f"read from {ENV_SOURCE} were refused")
