"""Large answers: the client hands the body to the run, which parses only what changed.

A list of thousands of versions is far above the size under which the API
client parses a body itself to look for QuantConnect's failure answers, so
these tests take the path the real API takes every run.
"""

import json

import pytest

from dbstate import data_tables, runs
from leansync.api import SMALL_BODY
from leansync.payload import PREFIX, KnownItem, parse_json, validate_document
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


LONG = "x" * PREFIX  # stored texts shorter than PREFIX are simply parsed


def test_parse_json_recognises_stored_texts_without_parsing_them():
    stored = '{"id": 1, "name": "%s"}' % LONG
    text = '{"versions": [%s, {"id": 1, "name": "b"}, {"id": 2}], "success": true}' % stored
    document = parse_json(text, source="s", known={stored: 1})
    assert document["versions"] == [KnownItem(1, stored), {"id": 1, "name": "b"}, {"id": 2}]
    assert document.item_texts == [stored, '{"id": 1, "name": "b"}', '{"id": 2}']
    # A known item is trusted (fields and raw are not needed for an unchanged version) ...
    known = validate_document(parse_json(text.replace(', {"id": 1, "name": "b"}', ""), source="s",
                                         known={stored: 1}), source="s")
    assert [(v.id, v.fields, v.raw, v.text) for v in known] == [(1, None, None, stored), (2, (None,) * 7, {"id": 2},
                                                                                          '{"id": 2}')]
    # ... and still counts for duplicate ids.
    with pytest.raises(Exception, match=r"versions\[1\] \(id 1\) repeats the id of versions\[0\]"):
        validate_document(document, source="s")


def test_an_item_that_only_starts_like_a_stored_text_is_parsed():
    stored = '{"id": 1, "name": "%s"}' % LONG
    longer = '{"id": 1, "name": "%s", "extra": 1}' % LONG  # the same first PREFIX characters
    document = parse_json('{"versions": [%s]}' % longer, source="s", known={stored: 1})
    assert document["versions"] == [{"id": 1, "name": LONG, "extra": 1}]
