"""`sync --deadline SECONDS` bounds the whole fetch (issue 11, item 1).

A server that trickles its answer a byte a second never trips a per-read
timeout; the deadline ends the run anyway: exit 1, one sentence naming the
deadline, a `failed` run, the lock released. No wait between attempts is
started that would end past it. Asserted through exit codes, messages and
the recorded state, never through wall time: deadlines of a second or two
keep each test short.

The run that meets the deadline is the installed command on both backends
in the first test; the runs around it (the history before, the run after)
and the sqlite-only variants run in-process (tests/main_in_process.py, with
the same stderr): the watchdog is a thread, the same in either.
"""

import pytest
import urllib3.util.retry

from dbstate import runs
from faults import assert_failed_run, leansync, qc, synced  # noqa: F401 (fixtures)
from leansync.source.api import make_session
from leansync.source.deadline import Deadline, DeadlinePassed
from main_in_process import leansync_in_process
from qc_server import Reply


def assert_late(result, database_url, before, deadline: str) -> str:
    return assert_failed_run(result, database_url, before, f"within the deadline of {deadline} s (--deadline)")


def test_a_server_trickling_its_whole_answer_meets_the_deadline(synced, qc, database_url):
    """Status line and headers too: the read of the headers is cut as well."""
    qc.reply(Reply(trickle=1.0))
    # Without the watchdog the headers alone would take minutes: the subprocess timeout would fail the test.
    result = leansync("sync", "--deadline", "1", "--timeout", "30", url=database_url, env=qc.env(), timeout=60)
    assert_late(result, database_url, synced, "1")
    # The lock was released: a run that does not wait for it at all gets it.
    again = leansync_in_process("sync", "-q", "--lock-timeout", "0", url=database_url, env=qc.env())
    assert again.returncode == 0, again.stderr
    assert runs(database_url)[-1]["status"] == "success"


@pytest.mark.sqlite_only
def test_a_body_trickling_after_prompt_headers_meets_the_deadline(synced, qc, database_url):
    qc.reply(Reply(trickle=1.0, trickle_headers=False))
    result = leansync_in_process("sync", "--deadline", "2", "--json", url=database_url, env=qc.env())
    message = assert_late(result, database_url, synced, "2")
    assert '"status": "failed"' in result.stdout and message in result.stdout.replace('\\"', '"')


@pytest.mark.sqlite_only
def test_each_attempt_gets_only_what_is_left_of_the_deadline(synced, qc, database_url):
    """A silent server and a per-read timeout far longer than the deadline."""
    qc.reply(Reply(delay=60))
    earlier = qc.count
    result = leansync_in_process("sync", "--deadline", "1", "--timeout", "60", url=database_url, env=qc.env())
    assert_late(result, database_url, synced, "1")
    assert qc.count == earlier + 1  # the one attempt's timeout was cut short, leaving no time for another


@pytest.mark.sqlite_only
def test_no_retry_wait_is_started_that_would_end_past_the_deadline(run, qc, database_url, sleeps):
    """Retry-After 1 s fits in the deadline and is waited for; 50 s does not, so the run ends there."""
    qc.reply(Reply(status=503, headers={"Retry-After": "1"}), Reply(status=503, headers={"Retry-After": "50"}))
    result = run("sync", "--deadline", "20", env=qc.env())
    assert result.exit_code == 1
    assert "within the deadline of 20 s (--deadline)" in result.stderr
    assert sleeps == [1]  # the second wait was never started
    assert qc.count == 2  # and no third attempt was made
    assert [r["status"] for r in runs(database_url)] == ["failed"]


def test_a_backoff_past_the_deadline_is_refused_by_the_retry_policy():
    retry = make_session(retries=4, deadline=Deadline(3)).get_adapter("http://x/").max_retries
    history = tuple(urllib3.util.retry.RequestHistory("POST", "/", None, 503, None) for _ in range(12))
    late = retry.new(history=history)  # its backoff is the 60 s cap
    assert late.deadline is retry.deadline
    with pytest.raises(DeadlinePassed):
        late.sleep()


def test_the_defaults_are_documented(run):
    result = run("sync", "--help")
    assert "--deadline SECONDS" in result.output and "[default: 600" in result.output
    assert "--max-response-mb N" in result.output and "[default: 256" in result.output
