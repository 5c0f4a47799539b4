"""Large answers: the client hands the body to the run, which decodes only what changed.

A list of thousands of versions is far above the size under which the API
client parses a body itself to look for QuantConnect's failure answers, so
these tests take the path the real API takes every run.
"""

import json

import pytest

from dbstate import data_tables, runs
from leansync.source.api import SMALL_BODY
from qc_server import FakeQuantConnect, Reply


@pytest.fixture
def qc(tag_versions):
    with FakeQuantConnect(versions=tag_versions[:1000]) as server:
        yield server


def test_a_large_list_syncs_and_a_second_run_changes_nothing(run, qc, database_url):
    assert len(json.dumps({"versions": qc.versions})) > SMALL_BODY
    first = run("sync", "--json", env=qc.env())
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["inserted"] == 1000
    second = run("sync", "--json", env=qc.env())
    assert json.loads(second.output)["unchanged"] == 1000
    qc.versions[5] = dict(qc.versions[5], description="rebuilt")
    third = json.loads(run("sync", "--json", env=qc.env()).output)
    assert (third["updated"], third["unchanged"]) == (1, 999)


def test_a_large_failure_answer_still_names_the_credentials(run, qc, database_url):
    padding = ["x" * 100] * 1000  # a failure body above SMALL_BODY
    qc.default = Reply(json={"success": False, "errors": ["Hash doesn't match.", *padding]}, authenticate=False)
    result = run("sync", env=qc.env())
    assert result.exit_code == 1
    assert "rejected the credentials read from the environment" in result.output
    assert runs(database_url)[-1]["status"] == "failed"


def test_a_large_bad_item_after_a_good_run_is_refused_with_nothing_changed(run, qc, database_url):
    assert run("sync", env=qc.env()).exit_code == 0
    before = data_tables(database_url)
    qc.versions[700] = dict(qc.versions[700], public="yes")
    result = run("sync", env=qc.env())
    assert result.exit_code == 1
    assert 'versions[700] (id %d): field "public" is not a boolean or 0/1: "yes"' % qc.versions[700]["id"] \
        in result.output
    assert data_tables(database_url) == before
