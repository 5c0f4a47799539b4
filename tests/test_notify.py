"""Notifications: delivered once, never lost, through real local servers.

leansync sends to a real HTTP server (Apprise's json:// posts and the
leansync webhook, whose signature the test checks with its own HMAC code) and
a real SMTP server (aiosmtpd, for Apprise's mailto://). Nothing of Apprise or
requests is mocked. Most runs are in-process, through click's CliRunner
(`here`, with the stderr logging handler the installed command's main()
installs); the installed `leansync` runs in a subprocess where the process is
the point: the end-to-end delivery to all three kinds of target, two syncs at
once, kill -9 during a delivery, the -v logs of the secrets test, and what
a start imports. Timestamps that are asserted come from runs under
freezegun, in-process.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from dbstate import full_dump_text, snapshot
from leansync.cli import cli
from qc_server import FakeQuantConnect
from main_in_process import leansync_in_process
from notify_servers import HttpReceiver, SmtpReceiver, free_port, verify_signature

# aiosmtpd warns about its own API while it authenticates, and Apprise, imported in-process, imports the
# standard library's imghdr (deprecated since Python 3.11); the suite turns warnings into errors. The installed
# command never shows these: Python ignores DeprecationWarnings raised outside __main__.
pytestmark = [pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")]

LEANSYNC = Path(sys.executable).parent / "leansync"
REPO = "https://github.com/QuantConnect/Lean"
SECRET = "whsec-0123456789abcdef"
UTC = timezone.utc
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def leansync(url: str, *args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(LEANSYNC), "--database-url", url, *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def here(url: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`leansync` in this process (CliRunner, with main()'s stderr logging), answering as `leansync()` does."""
    return leansync_in_process(*args, url=url, env=env)


def with_hashes(versions: list[dict]) -> list[dict]:
    """Every version hashes of its own, so compare links have two ends and each new version brings new hashes."""
    return [dict(v, leanHash=hashlib.sha1(f"lean:{v['id']}".encode()).hexdigest(),
                 leanCloudHash=hashlib.sha1(f"cloud:{v['id']}".encode()).hexdigest()) for v in versions]


@pytest.fixture
def http():
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def versions(tag_versions):
    """The ten newest tags with hashes of their own, newest id first."""
    return with_hashes(tag_versions[:10])


def webhook_env(receiver: HttpReceiver, *, path="/hook", secret=SECRET) -> dict:
    env = {"LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}{path}"}
    if secret:
        env["LEANSYNC_WEBHOOK_SECRET"] = secret
    return env


def changes_json(url: str, started_at: str) -> list[dict]:
    """What `changes --format json` says of the run that started at ``started_at``."""
    result = here(url, "changes", "--since", started_at, "--format", "json")
    assert result.returncode == 0, result.stderr
    return [e for e in json.loads(result.stdout) if e["event_time"] == started_at]


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("leansync: warning:")]


# --- what is sent -------------------------------------------------------------------

def test_each_target_gets_one_digest_per_run_with_news(database_url, http, versions, write_response):
    smtp = SmtpReceiver("bob", "smtp-pa55word")
    try:
        env = {**webhook_env(http),
               "LEANSYNC_NOTIFY": f"json://127.0.0.1:{http.port}/apprise, "
                                  f"mailto://bob:smtp-pa55word@127.0.0.1:{smtp.port}"
                                  "?from=leansync@example.com&to=ops@example.com"}
        first = leansync(database_url, "sync", "--from-file", write_response(versions[1:]), "--json", env=env)
        assert first.returncode == 0, first.stderr
        second = leansync(database_url, "sync", "--from-file", write_response(versions), "--json", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stderr == ""
        quiet = here(database_url, "sync", "--from-file", write_response(versions), env=env)  # no news
        assert quiet.returncode == 0, quiet.stderr

        hooks = http.at("/hook")
        assert [h.json()["run_id"] for h in hooks] == [1, 2]  # the third run sent nothing
        for hook in hooks:
            assert hook.headers["Content-Type"] == "application/json"
            assert verify_signature(SECRET, hook.body, hook.headers["X-Leansync-Signature-256"])
            assert not verify_signature("another secret", hook.body, hook.headers["X-Leansync-Signature-256"])
        assert hooks[0].headers["Idempotency-Key"] != hooks[1].headers["Idempotency-Key"]

        document = hooks[1].json()
        run = json.loads(second.stdout)
        assert document["schema"] == "leansync.run/1"
        assert document["counts"] == {k: run[k] for k in ("versions_seen", "inserted", "updated", "unchanged",
                                                          "removed", "restored", "new_hashes")}
        new, old_newest = versions[0], versions[1]
        expected_events = changes_json(database_url, document["started_at"])
        assert [e["event"] for e in expected_events] == ["new_version", "new_hash", "new_hash"]
        assert document["events"] == [
            dict(event,
                 commit_url=f"{REPO}/commit/{new['leanHash']}" if event["hash_kind"] != "lean_cloud" else None,
                 compare_url=(f"{REPO}/compare/{old_newest['leanHash']}...{new['leanHash']}"
                              if event["event"] == "new_version" else None))
            for event in expected_events]
        assert all(e["compare_url"] is None for e in hooks[0].json()["events"])  # a first run compares with nothing

        posts = [p.json() for p in http.at("/apprise")]
        assert [p["title"] for p in posts] == ["leansync: 9 new LEAN versions",
                                               f"LEAN {new['id']} is available (public, master)"]
        assert f"{REPO}/compare/{old_newest['leanHash']}...{new['leanHash']}" in posts[1]["message"]
        assert new["leanCloudHash"] in posts[1]["message"]
        assert f"/commit/{new['leanCloudHash']}" not in posts[1]["message"]  # a private repository: no link

        assert [m["Subject"] for m in smtp.messages] == [p["title"] for p in posts]
        mail = smtp.messages[1].get_body(preferencelist=("html",)).get_content()  # Apprise made HTML of the Markdown
        assert f'<a href="{REPO}/commit/{new["leanHash"]}">commit</a>' in mail
        plain = smtp.messages[1].get_body(preferencelist=("plain",)).get_content()
        assert new["description"].split("(")[0].strip() in plain
    finally:
        smtp.close()

    runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
    assert [(r["id"], r["notifications_sent"], r["notifications_pending"]) for r in runs] == [
        (3, 0, 0), (2, 3, 0), (1, 3, 0)]
    table = here(database_url, "runs").stdout
    assert "3 sent" in table.splitlines()[2]


def test_a_respelled_response_is_no_news(database_url, http, versions, write_response):
    env = webhook_env(http)
    assert here(database_url, "sync", "--from-file", write_response(versions), env=env).returncode == 0
    respelled = [dict(reversed(list(v.items()))) for v in versions]  # same objects, keys in another order
    result = here(database_url, "sync", "--from-file", write_response(respelled), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["unchanged"] == len(versions)
    assert len(http.at("/hook")) == 1


def test_a_long_digest_stops_at_twenty_lines_with_a_command_that_works(database_url, http, tag_versions,
                                                                       write_response):
    env = {"LEANSYNC_NOTIFY": f"json://127.0.0.1:{http.port}/apprise", **webhook_env(http)}
    result = here(database_url, "sync", "--from-file", write_response(tag_versions[:30]), env=env)
    assert result.returncode == 0, result.stderr
    message = http.at("/apprise")[0].json()["message"]
    lines = message.splitlines()
    events = http.at("/hook")[0].json()["events"]  # the webhook carries them all
    assert len(lines) == 21 and len(events) > 20
    more = lines[-1]
    assert more.startswith(f"… and {len(events) - 20} more: leansync changes --since ")
    pasted = here(database_url, *more.split(": ", 1)[1].split()[1:], "--format", "json")
    assert pasted.returncode == 0, pasted.stderr
    assert len(json.loads(pasted.stdout)) == len(events)


def test_a_dry_run_prints_what_each_target_would_get_and_sends_and_writes_nothing(database_url, http, versions,
                                                                                   write_response):
    env = {"LEANSYNC_NOTIFY": f"json://127.0.0.1:{http.port}/apprise", **webhook_env(http)}
    assert here(database_url, "sync", "--from-file", write_response(versions[1:]), env=env).returncode == 0
    before = snapshot(database_url)
    result = here(database_url, "sync", "--from-file", write_response(versions), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert f"would notify json://127.0.0.1:{http.port} (Apprise):" in result.stdout
    assert f"    LEAN {versions[0]['id']} is available (public, master)" in result.stdout
    assert f"would notify http://127.0.0.1:{http.port} (webhook, schema leansync.run/1):" in result.stdout
    assert snapshot(database_url) == before
    assert len(http.received) == 2  # the first run's two, nothing from the dry run

    as_json = here(database_url, "sync", "--from-file", write_response(versions), "--dry-run", "--json", env=env)
    previews = json.loads(as_json.stdout)["notifications"]
    assert [(p["target"], p["kind"]) for p in previews] == [(f"json://127.0.0.1:{http.port}", "apprise"),
                                                            (f"http://127.0.0.1:{http.port}", "webhook")]
    assert previews[1]["document"]["events"][0]["version_id"] == versions[0]["id"]
    assert snapshot(database_url) == before


# --- failures: never lost, never a failed run ---------------------------------------------

class Failing:
    """A webhook target that fails one way, then is fixed."""

    def __init__(self, kind: str):
        self.kind = kind
        self.port = free_port()
        self.receiver = None
        if kind == "500":
            self.receiver = HttpReceiver(status=500, port=self.port)
        elif kind == "timeout":
            self.receiver = HttpReceiver(delay=4, port=self.port)
        # "refused": nothing listens on the port until it is fixed

    def env(self) -> dict:
        return {"LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{self.port}/hook", "LEANSYNC_WEBHOOK_SECRET": SECRET}

    def fix(self) -> HttpReceiver:
        if self.receiver is None:
            self.receiver = HttpReceiver(port=self.port)
        self.receiver.status, self.receiver.delay = 200, 0
        return self.receiver

    def close(self):
        if self.receiver is not None:
            self.receiver.close()


@pytest.fixture(params=["500", "refused", "timeout"])
def failing(request):
    target = Failing(request.param)
    yield target
    target.close()


REASONS = {"500": "HTTP 500 Internal Server Error", "refused": "could not connect: [Errno 111] Connection refused",
           "timeout": "no answer within 1 s"}


def test_a_failed_delivery_is_one_warning_and_the_next_run_delivers_both_in_order(database_url, failing, versions,
                                                                                  write_response):
    env = failing.env()
    first = here(database_url, "-q", "sync", "--from-file", write_response(versions[1:]),
                 "--notify-timeout", "1", env=env)
    assert first.returncode == 0
    assert first.stdout.startswith("run 1: 9 versions listed")  # the run's normal output
    label = f"http://127.0.0.1:{failing.port}"
    assert first.stderr.splitlines() == [
        f"leansync: warning: could not notify {label} of run 1: {REASONS[failing.kind]}; it stays pending for "
        "the next run or `leansync notify`"]
    tried = len(failing.receiver.received) if failing.receiver else 0

    receiver = failing.fix()
    second = here(database_url, "sync", "--from-file", write_response(versions), env=env)
    assert second.returncode == 0 and second.stderr == ""
    delivered = receiver.at("/hook")[tried:]
    assert [d.json()["run_id"] for d in delivered] == [1, 2]  # in order, each once
    assert all(verify_signature(SECRET, d.body, d.headers["X-Leansync-Signature-256"]) for d in delivered)
    if tried:  # the failed attempt carried the same bytes and key as the delivery
        assert receiver.at("/hook")[0].body == delivered[0].body
        assert receiver.at("/hook")[0].headers["Idempotency-Key"] == delivered[0].headers["Idempotency-Key"]

    runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
    assert [r["notifications_sent"] for r in runs] == [1, 1]


def test_leansync_notify_delivers_what_is_pending_without_a_sync(database_url, failing, versions, write_response):
    env = failing.env()
    for response in (versions[2:], versions[1:]):
        result = here(database_url, "sync", "--from-file", write_response(response), "--notify-timeout", "1",
                      env=env)
        assert result.returncode == 0 and len(warnings_of(result.stderr)) == 1
    still = here(database_url, "notify", "--notify-timeout", "1", env=env)
    assert still.returncode == 1
    assert still.stdout == "notifications: 0 sent, 2 pending, 0 abandoned\n"
    assert still.stderr.splitlines()[-1] == ("leansync: error: 1 notification target(s) failed; 2 notification(s) "
                                             "stay pending")
    tried = len(failing.receiver.received) if failing.receiver else 0

    receiver = failing.fix()
    result = here(database_url, "notify", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "notifications: 2 sent, 0 pending, 0 abandoned\n"
    assert [d.json()["run_id"] for d in receiver.at("/hook")[tried:]] == [1, 2]
    again = here(database_url, "-q", "notify", env=env)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(receiver.at("/hook")) == tried + 2


def test_the_timeout_bounds_all_deliveries_and_an_untried_target_counts_as_failed(database_url, http, versions,
                                                                                  write_response):
    held = HttpReceiver(hold=threading.Event())  # never answers while the run waits
    try:
        env = {"LEANSYNC_NOTIFY": f"json://127.0.0.1:{held.port}/apprise", **webhook_env(http)}
        result = here(database_url, "sync", "-q", "--from-file", write_response(versions), "--notify-timeout", "1",
                      env=env)
        assert result.returncode == 0
        apprise_warning, webhook_warning = warnings_of(result.stderr)
        label = f"json://127.0.0.1:{held.port}"
        assert apprise_warning.startswith(f"leansync: warning: could not notify {label} of run 1: ")
        assert webhook_warning == (f"leansync: warning: could not notify http://127.0.0.1:{http.port} of run 1: not "
                                   "tried: the --notify-timeout of 1 s ran out; it stays pending for the next run or "
                                   "`leansync notify`")
        assert http.received == []
    finally:
        held.close()
    runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
    assert runs[0]["notifications_pending"] == 2
    result = here(database_url, "notify", env={**env, "LEANSYNC_NOTIFY": ""})  # the Apprise target removed
    assert result.stdout == "notifications: 1 sent, 0 pending, 1 abandoned\n"
    assert [h.json()["run_id"] for h in http.at("/hook")] == [1]


def cli_at(url, moment, *args, env=None):
    with freeze_time(moment):
        return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], env=env, catch_exceptions=False)


def test_a_row_pending_for_a_day_is_abandoned_and_check_and_metrics_say_so(database_url, versions, write_response):
    port = free_port()
    env = {"LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook"}
    label = f"http://127.0.0.1:{port}"
    result = cli_at(database_url, T0, "sync", "--from-file", write_response(versions), env=env)
    assert result.exit_code == 0
    assert cli_at(database_url, T0 + timedelta(minutes=30), "check", "--max-age", "26h").exit_code == 0

    two_hours = cli_at(database_url, T0 + timedelta(hours=2), "check", "--max-age", "26h")
    assert two_hours.exit_code == 1
    assert two_hours.output.startswith("WARNING - last successful sync 2h ago (run 1 at 2026-03-01T06:00:00Z); "
                                       f"10 versions listed; a notification to {label} is pending for 2h |")
    metrics = cli_at(database_url, T0 + timedelta(hours=2), "metrics").output
    assert 'leansync_notifications{status="pending"} 1.0' in metrics
    assert "leansync_notification_oldest_pending_age_seconds 7200.0" in metrics

    receiver = HttpReceiver(port=port)
    try:
        late = cli_at(database_url, T0 + timedelta(hours=24, seconds=1), "notify", env=env)
        assert late.exit_code == 0
        assert late.stdout == "notifications: 0 sent, 0 pending, 1 abandoned\n"
        assert late.stderr == (f"leansync: warning: gave up notifying {label} of run 1: not delivered within 24h "
                               "of its run\n")
        assert receiver.received == []  # abandoned is never sent
    finally:
        receiver.close()
    check = cli_at(database_url, T0 + timedelta(hours=25), "check", "--max-age", "26h")
    assert check.exit_code == 1
    assert ("1 notification abandoned in the last 26h (" + label + ": abandoned: not delivered within 24h of its "
            "run (last error: could not connect: [Errno 111] Connection refused))") in check.output
    metrics = cli_at(database_url, T0 + timedelta(hours=25), "metrics").output
    assert 'leansync_notifications{status="abandoned"} 1.0' in metrics
    assert "oldest_pending" not in metrics
    # Once the abandonment is older than --max-age, check is OK again.
    assert cli_at(database_url, T0 + timedelta(hours=50), "sync", "--from-file", write_response(versions),
                  env=env).exit_code == 0
    assert cli_at(database_url, T0 + timedelta(hours=51), "check", "--max-age", "26h").exit_code == 0


def test_a_target_no_longer_configured_has_its_rows_abandoned(database_url, http, versions, write_response):
    port = free_port()
    result = here(database_url, "sync", "--from-file", write_response(versions[1:]),
                  env={"LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{port}/old"})
    assert result.returncode == 0 and len(warnings_of(result.stderr)) == 1
    result = here(database_url, "sync", "--from-file", write_response(versions), env=webhook_env(http))
    assert result.returncode == 0
    assert result.stderr == (f"leansync: warning: gave up notifying http://127.0.0.1:{port} of run 1: "
                             "the target is no longer configured\n")
    assert [h.json()["run_id"] for h in http.at("/hook")] == [2]
    runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
    assert [(r["notifications_sent"], r["notifications_abandoned"]) for r in runs] == [(1, 0), (0, 1)]


# --- concurrency and kill -9 ---------------------------------------------------------------

@pytest.mark.slow
def test_two_concurrent_syncs_each_deliver_their_digest_once(database_url, http, versions, write_response):
    env = webhook_env(http)
    a, b = write_response(versions[2:]), write_response(versions[:8])  # each is news whichever runs first
    processes = [subprocess.Popen([str(LEANSYNC), "--database-url", database_url, "sync", "--from-file", str(path)],
                                  env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for path in (a, b)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all(err == "" for _, err in outputs)
    keys = [h.headers["Idempotency-Key"] for h in http.at("/hook")]
    assert sorted(h.json()["run_id"] for h in http.at("/hook")) == [1, 2]
    assert len(set(keys)) == 2


@pytest.mark.slow
def test_kill_9_during_delivery_loses_nothing_and_the_duplicate_carries_the_same_key(database_url, versions,
                                                                                     write_response):
    held = HttpReceiver(hold=threading.Event())
    try:
        env = webhook_env(held)
        process = subprocess.Popen([str(LEANSYNC), "--database-url", database_url, "sync", "--from-file",
                                    str(write_response(versions))], env={**os.environ, **env},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert held.arrived.wait(60), "the webhook was never called"
        os.kill(process.pid, signal.SIGKILL)  # the target has the message; leansync never records it
        process.wait(30)
        held.hold.set()
        runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
        assert [(r["id"], r["notifications_pending"]) for r in runs] == [(1, 1)]  # committed, still pending

        result = here(database_url, "sync", "--from-file", write_response(versions), env=env)  # no news
        assert result.returncode == 0 and result.stderr == ""
        first, again = held.at("/hook")
        assert again.body == first.body  # the same run, the same bytes
        assert again.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
        runs = json.loads(here(database_url, "runs", "--format", "json").stdout)
        assert [(r["id"], r["notifications_sent"]) for r in runs] == [(2, 0), (1, 1)]
    finally:
        held.close()


# --- secrets --------------------------------------------------------------------------------

def test_secrets_appear_in_no_output_table_metric_or_error(database_url, http, versions, write_response, tmp_path):
    dead = free_port()
    token = "qc-api-token-0123456789abcdef"
    secrets = [token, "json-pa55word-XYZ", "hook-token-QRS987", SECRET, "dead-pa55-LMN"]
    config = tmp_path / "apprise.yml"
    config.write_text(f"urls:\n  - json://alice:{secrets[4]}@127.0.0.1:{dead}/x\n")
    seen = []
    with FakeQuantConnect(versions=versions[1:], token=token) as qc:
        env = {**qc.env(), "LEANSYNC_NOTIFY": f"json://alice:{secrets[1]}@127.0.0.1:{http.port}/apprise",
               "LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{http.port}/hook/{secrets[2]}?token={secrets[2]}",
               "LEANSYNC_WEBHOOK_SECRET": SECRET}
        for response in (versions[1:], versions):
            qc.versions = response
            result = leansync(database_url, "-v", "sync", "--notify-config", config, env=env)
            assert result.returncode == 0, result.stderr
            assert len(warnings_of(result.stderr)) == 1  # the dead target, named by its label
            seen += [result.stdout, result.stderr]
        assert qc.problems == []
    for args in (["-v", "notify", "--notify-config", config], ["runs", "--format", "json"], ["metrics"],
                 ["check", "--max-age", "1d"], ["sync", "--from-file", write_response(versions[3:]), "--dry-run",
                                                "--notify-config", config]):
        # -v's logs come from the handlers the process sets up: the installed command; the rest in-process.
        result = (leansync if "-v" in args else here)(database_url, *args, env=env)
        seen += [result.stdout, result.stderr]
    seen.append(full_dump_text(database_url))  # every table: last_error holds the failures' messages
    text = "\n".join(seen)
    assert f"json://127.0.0.1:{dead}" in text and "Connection refused" in text  # the failure is visible
    for secret in secrets:
        assert secret not in text, [line for line in text.splitlines() if secret in line][:3]
    assert len(http.at(f"/hook/{secrets[2]}")) == 2  # and the secrets did reach their targets
    assert all(verify_signature(SECRET, h.body, h.headers["X-Leansync-Signature-256"]) for h in http.received
               if h.path.startswith("/hook"))


def test_a_bad_target_is_a_usage_error_that_names_no_secret_and_writes_nothing(tmp_path, write_response, versions):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    cases = [
        ({"LEANSYNC_NOTIFY": "nosuchservice://user:tok-SECRET-123@host/x"},
         "LEANSYNC_NOTIFY: URL 1 (nosuchservice://) is not one Apprise can send to"),
        ({"LEANSYNC_WEBHOOK_URL": "ftp://user:tok-SECRET-123@host/x"},
         "LEANSYNC_WEBHOOK_URL must be an http:// or https:// URL"),
        ({"LEANSYNC_WEBHOOK_SECRET": "tok-SECRET-123"},
         "LEANSYNC_WEBHOOK_SECRET is set but LEANSYNC_WEBHOOK_URL is not"),
        ({"LEANSYNC_NOTIFY_CONFIG": str(tmp_path / "missing.yml")},
         f"the notification configuration file {tmp_path / 'missing.yml'} does not exist or is not a file"),
    ]
    for env, message in cases:
        result = here(url, "sync", "--from-file", write_response(versions), env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"leansync: error: {message}")
        assert len(result.stderr.splitlines()) == 1
        assert "tok-SECRET-123" not in result.stderr
        assert not (tmp_path / "never.db").exists()


# --- the Python API, db copy, start-up -------------------------------------------------------

def test_run_sync_with_notify_false_keeps_the_rows_for_notify_pending(database_url, http, versions, write_response,
                                                                      monkeypatch):
    import leansync as api

    for name, value in webhook_env(http).items():
        monkeypatch.setenv(name, value)
    result = api.run_sync(database_url=database_url, from_file=write_response(versions), notify=False)
    assert result.notifications is None and http.received == []
    delivered = api.notify_pending(database_url=database_url, timeout=10, max_age=timedelta(hours=1))
    assert (delivered.sent, delivered.pending, delivered.abandoned, delivered.warnings) == (1, 0, 0, ())
    assert http.at("/hook")[0].json()["run_id"] == result.run_id
    again = api.run_sync(database_url=database_url, from_file=write_response(versions[1:]))
    assert (again.notifications.sent, again.notifications.pending) == (1, 0)


def test_a_copied_database_delivers_its_pending_rows_to_the_same_targets(database_url, tmp_path, http, versions,
                                                                         write_response, request):
    """The target key is the same in every database, so db copy keeps pending rows deliverable."""
    if database_url.startswith("sqlite"):
        other = request.getfixturevalue("postgres_cluster").url(request.getfixturevalue("postgres_database"))
    else:
        other = f"sqlite:///{tmp_path / 'copy.db'}"
    env = webhook_env(http)
    assert here(database_url, "sync", "--from-file", write_response(versions), env=env).returncode == 0
    http.status = 500
    assert here(database_url, "sync", "--from-file", write_response(versions[1:]), env=env).returncode == 0
    copied = here(database_url, "db", "copy", "--to", other)
    assert copied.returncode == 0, copied.stderr
    assert "2 notification" in copied.stdout
    http.status = 200
    result = here(other, "notify", env=env)
    assert result.stdout == "notifications: 1 sent, 0 pending, 0 abandoned\n"
    assert [h.json()["run_id"] for h in http.at("/hook")] == [1, 2, 2]  # run 2 failed once, then came from the copy


def wait_for_listener(port: int) -> None:
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            threading.Event().wait(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_the_readme_receiver_verifies_what_leansync_sends(database_url, versions, write_response, tmp_path):
    """The README's ten-line receiver, run as written (on a free port), accepts leansync's webhook only."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("A receiver that checks both:\n\n```python\n", 1)[1].split("```", 1)[0]
    port = free_port()
    assert 'HTTPServer(("", 8080), Receiver)' in code
    script = tmp_path / "receiver.py"
    script.write_text(code.replace('("", 8080)', f'("127.0.0.1", {port})'))
    receiver = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "LEANSYNC_WEBHOOK_SECRET": SECRET,
                                "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env = {"LEANSYNC_WEBHOOK_URL": f"http://127.0.0.1:{port}/", "LEANSYNC_WEBHOOK_SECRET": SECRET}
        wait_for_listener(port)
        result = here(database_url, "sync", "--from-file", write_response(versions), env=env)
        assert (result.returncode, result.stderr) == (0, "")  # 204: delivered
        forged = here(database_url, "sync", "--from-file", write_response(versions[1:]),
                      env={**env, "LEANSYNC_WEBHOOK_SECRET": "not-the-secret"})
        assert forged.returncode == 0
        assert "HTTP 401" in forged.stderr  # the receiver refused the wrong signature
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=10)
    assert out.count("'event': 'new_version'") == len(versions)  # it printed the first run's events


HEAVY = ("apprise", "markdown", "yaml", "requests_oauthlib", "oauthlib")
PROBE = """
import sys
from leansync.cli import main
sys.argv = ["leansync", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(sorted({m.split(".")[0] for m in sys.modules} & set(%r)), file=sys.stderr)
""" % (HEAVY,)


def imported(*args, env: dict) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    return json.loads(result.stderr.splitlines()[-1].replace("'", '"'))


def test_start_up_and_a_sync_without_targets_import_no_apprise(tmp_path, http, write_response, versions):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert imported("--help", env={}) == []
    assert imported("--database-url", url, "sync", "--from-file", write_response(versions), env={}) == []
    assert imported("--database-url", url, "notify", env={}) == []
    assert imported("--database-url", url, "sync", "--from-file", write_response(versions[1:]),
                    env=webhook_env(http)) == []  # the webhook is requests, not Apprise
    # The check can fail: a configured Apprise target does import it.
    assert "apprise" in imported("--database-url", url, "sync", "--from-file", write_response(versions),
                                 env={"LEANSYNC_NOTIFY": f"json://127.0.0.1:{http.port}/apprise"})
