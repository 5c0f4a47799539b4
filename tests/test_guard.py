"""The mass-removal guard (reliability issue, item 4).

A glitching API that suddenly lists nothing, or a fraction of the list,
must not mark the history as removed: a run that would remove more than half
of the versions listed before it fails with exit 1 and changes nothing,
unless --allow-mass-removal is given.
"""

import json

import pytest

from clitext import error_line
from dbstate import check_invariants, data_tables, runs, snapshot


def test_removing_exactly_half_is_allowed(synced, run, database_url, write_response, ten):
    result = run("sync", "--json", "--from-file", write_response(ten[:5]))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == 5
    check_invariants(database_url)


@pytest.mark.parametrize("kept", [4, 1, 0], ids=["six-of-ten", "nine-of-ten", "empty-list"])
def test_removing_more_than_half_fails_and_changes_nothing(synced, run, database_url, write_response, ten, kept):
    before = data_tables(database_url)
    result = run("sync", "--from-file", write_response(ten[:kept]))

    assert result.exit_code == 1
    removed = 10 - kept
    message = (f"leansync: error: refusing to mark {removed} of 10 listed versions as removed "
               "(more than half); if QuantConnect really withdrew them, run again with --allow-mass-removal\n")
    assert result.stderr == message
    assert result.stdout == ""
    assert data_tables(database_url) == before
    last = runs(database_url)[-1]
    assert (last["status"], last["error"], last["removed"]) == ("failed", message[len("leansync: error: "):-1], 0)
    check_invariants(database_url)


def test_json_output_reports_the_refusal(synced, run, write_response):
    result = run("sync", "--json", "--from-file", write_response([]))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["status"] == "failed"
    assert "--allow-mass-removal" in document["error"]
    assert isinstance(document["run_id"], int)


def test_allow_mass_removal_applies_the_run(synced, run, database_url, write_response):
    result = run("sync", "--json", "--allow-mass-removal", "--from-file", write_response([]))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == 10
    assert [r["status"] for r in runs(database_url)] == ["success", "success"]
    check_invariants(database_url)


def test_versions_already_removed_do_not_count_as_listed(synced, run, database_url, write_response, ten):
    # 10 stored, 4 removed by a normal run: 6 are listed. Removing 4 of those 6 is too many.
    assert run("sync", "--from-file", write_response(ten[:6])).exit_code == 0
    result = run("sync", "--from-file", write_response(ten[:2]))
    assert result.exit_code == 1
    assert "refusing to mark 4 of 6 listed versions as removed" in result.stderr
    # Removing 3 of the 6 (half) while 4 long-removed versions stay away is fine.
    assert run("sync", "--from-file", write_response(ten[:3])).exit_code == 0
    check_invariants(database_url)


def test_first_run_with_an_empty_list_is_not_a_mass_removal(run, database_url, write_response):
    result = run("sync", "--json", "--from-file", write_response([]))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["versions_seen"] == 0


# --- a dry run applies the guard, and still writes nothing --------------------------------------

GUARD_MESSAGE = ("refusing to mark 10 of 10 listed versions as removed (more than half); if QuantConnect "
                 "really withdrew them, run again with --allow-mass-removal")


def test_dry_run_reports_a_run_the_guard_would_refuse(synced, run, write_response):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "--json", "--from-file", write_response([]))
    assert result.exit_code == 1
    assert error_line(result.stderr) == GUARD_MESSAGE
    document = json.loads(result.stdout)
    assert (document["status"], document["run_id"], document["dry_run"]) == ("failed", None, True)
    assert document["error"] == GUARD_MESSAGE
    assert (document["versions_seen"], document["removed"]) == (0, 10)
    assert [c["action"] for c in document["changes"]] == ["remove"] * 10
    assert snapshot(synced) == before  # nothing written: not even a failed sync_run row


@pytest.mark.sqlite_only
def test_dry_run_human_output_says_the_run_would_be_refused(synced, run, write_response, ten):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "-q", "--from-file", write_response(ten[:3]))
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith("refusing to mark 7 of 10 listed versions as removed")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dry run, nothing written; the mass-removal guard would refuse this run: "
                               "3 versions listed; 0 new, 0 changed, 7 removed")
    assert sum(line.startswith("  removed ") for line in lines) == 7
    assert snapshot(synced) == before


def test_dry_run_with_allow_mass_removal_plans_the_removal(synced, run, write_response):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "--json", "--allow-mass-removal", "--from-file", write_response([]))
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["status"], document["removed"]) == ("dry_run", 10)
    assert snapshot(synced) == before
