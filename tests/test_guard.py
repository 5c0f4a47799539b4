"""The mass-removal guard (reliability issue, item 4).

A glitching API that suddenly lists nothing, or a fraction of the list,
must not mark the history as removed: a run that would remove more than half
of the versions listed before it fails with exit 1 and changes nothing,
unless --allow-mass-removal is given.
"""

import json

import pytest

from dbstate import check_invariants, data_tables, runs


@pytest.fixture
def ten(tag_versions):
    return tag_versions[:10]


@pytest.fixture
def synced(run, write_response, ten):
    result = run("sync", "--from-file", write_response(ten))
    assert result.exit_code == 0, result.stderr


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
