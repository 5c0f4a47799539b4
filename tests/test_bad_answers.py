"""Bad answers from the API (reliability issue, item 2).

Every malformed answer fails the run with exit 1 and one sentence on stderr
that names the offending item (index and id) and field, without a traceback;
the data tables stay exactly as they were, and sync_run gets a `failed` row
carrying the same sentence. Unknown extra fields are fine: they land in raw.
"""

import json
import random
import string

import pytest
from sqlalchemy import select

from dbstate import check_invariants, data_tables, engine_for, runs
from leansync.store.models import lean_version
from qc_server import FakeQuantConnect, Reply

PREFIX = "leansync: error: "


def _item(tag_versions, index, **changes):
    version = dict(tag_versions[index])
    for key, value in changes.items():
        if value is DROP:
            del version[key]
        else:
            version[key] = value
    return version


DROP = object()


def _incompressible(length: int) -> str:
    """Printable ASCII that no compression shrinks much (PostgreSQL compresses index rows)."""
    return "".join(random.Random(length).choice(string.ascii_letters + string.digits) for _ in range(length))


def _document(tag_versions, bad_item):
    """Five good versions (one of them changed) with a bad one at index 2."""
    good = [dict(v) for v in tag_versions[:6]]
    good[0]["description"] = "changed, but this run must not land"
    return {"success": True, "errors": [], "versions": good[:2] + [bad_item] + good[3:]}


# (test id, builds the document or raw bytes from tag_versions, the message after "<source>: " or whole)
ITEM_CASES = [
    ("item-not-object", lambda t: "v2.5.17000",
     "versions[2] is a JSON string, not an object"),
    ("item-null", lambda t: None,
     "versions[2] is a JSON null, not an object"),
    ("missing-id", lambda t: _item(t, 2, id=DROP),
     'versions[2] has no "id"'),
    ("id-null", lambda t: _item(t, 2, id=None),
     'versions[2]: field "id" is a JSON null, not an integer: None'),
    ("id-string", lambda t: _item(t, 2, id="17000"),
     "versions[2]: field \"id\" is a JSON string, not an integer: '17000'"),
    ("id-boolean", lambda t: _item(t, 2, id=True),
     'versions[2]: field "id" is a JSON boolean, not an integer: True'),
    ("id-float", lambda t: _item(t, 2, id=17000.0),
     'versions[2]: field "id" is a JSON number, not an integer: 17000.0'),
    ("duplicate-id", lambda t: _item(t, 2, id=t[0]["id"]),
     "versions[2] (id {id0}) repeats the id of versions[0]"),
    # versions[1] is stored unchanged: recognised by its digest, never decoded, its id still counts.
    ("duplicate-identical-unchanged", lambda t: dict(t[1]),
     "versions[2] (id {id1}) repeats the id of versions[1]"),
    ("duplicate-of-an-unchanged-item", lambda t: _item(t, 1, description="another"),
     "versions[2] (id {id1}) repeats the id of versions[1]"),
    ("created-unparseable", lambda t: _item(t, 2, created="last Tuesday"),
     "versions[2] (id {id2}): field \"created\" is not a valid timestamp: 'last Tuesday'"),
    ("created-number", lambda t: _item(t, 2, created=1679431548),
     'versions[2] (id {id2}): field "created" is a JSON number, not a timestamp string: 1679431548'),
    ("public-string", lambda t: _item(t, 2, public="yes"),
     'versions[2] (id {id2}): field "public" is not a boolean or 0/1: "yes"'),
    ("public-two", lambda t: _item(t, 2, public=2),
     'versions[2] (id {id2}): field "public" is not a boolean or 0/1: 2'),
    ("name-number", lambda t: _item(t, 2, name=2.5),
     'versions[2] (id {id2}): field "name" is a JSON number, not a string: 2.5'),
    ("description-list", lambda t: _item(t, 2, description=["a", "b"]),
     'versions[2] (id {id2}): field "description" is a JSON array, not a string: ["a", "b"]'),
    ("leanHash-object", lambda t: _item(t, 2, leanHash={"sha": "abc"}),
     'versions[2] (id {id2}): field "leanHash" is a JSON object, not a string: {{"sha": "abc"}}'),
    ("leanCloudHash-boolean", lambda t: _item(t, 2, leanCloudHash=False),
     'versions[2] (id {id2}): field "leanCloudHash" is a JSON boolean, not a string: false'),
    ("ref-number", lambda t: _item(t, 2, ref=7),
     'versions[2] (id {id2}): field "ref" is a JSON number, not a string: 7'),
    ("nul-in-description", lambda t: _item(t, 2, description="bad\x00byte"),
     "versions[2] (id {id2}): a string holds a NUL character (\\u0000), which the database cannot store"),
    ("nul-in-unknown-field", lambda t: _item(t, 2, notes={"deep": ["\x00"]}),
     "versions[2] (id {id2}): a string holds a NUL character (\\u0000), which the database cannot store"),
    # What PostgreSQL cannot store is refused on both backends (docs/schema.md, "Limits").
    ("leanHash-too-long", lambda t: _item(t, 2, leanHash=_incompressible(10_000)),
     'versions[2] (id {id2}): field "leanHash" is 10,000 bytes long, more than the 2,000 a hash may have '
     "(the database indexes hashes)"),
    ("leanCloudHash-too-long-in-utf8", lambda t: _item(t, 2, leanCloudHash="\U0001F600" * 501),
     'versions[2] (id {id2}): field "leanCloudHash" is 2,004 bytes long, more than the 2,000 a hash may have '
     "(the database indexes hashes)"),
    ("created-before-year-1-in-utc", lambda t: _item(t, 2, created="0001-01-01T00:30:00+01:00"),
     'versions[2] (id {id2}): field "created" leaves the calendar (years 1 to 9999) once converted to UTC: '
     "'0001-01-01T00:30:00+01:00'"),
    ("created-after-year-9999-in-utc", lambda t: _item(t, 2, created="9999-12-31T23:00:00-05:00"),
     'versions[2] (id {id2}): field "created" leaves the calendar (years 1 to 9999) once converted to UTC: '
     "'9999-12-31T23:00:00-05:00'"),
]

DOCUMENT_CASES = [
    ("invalid-json", b'{"versions": [{"id": 1', "is not JSON (it starts with '{\"versions\": [{\"id\": 1')"),
    ("html", b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>",
     "is HTML (it starts with '<!DOCTYPE html> <html><body>502 Bad Gate')"),
    ("empty-body", b"", "is not JSON (it starts with '')"),
    ("top-level-array", b"[]", "is a JSON array, not an object"),
    ("top-level-string", b'"ok"', "is a JSON string, not an object"),
    ("missing-versions", b'{"success": true, "errors": []}', 'has no "versions" list'),
    ("versions-null", b'{"success": true, "versions": null}', 'has "versions" as a JSON null, not a list'),
    ("versions-object", b'{"success": true, "versions": {"17000": {}}}', 'has "versions" as a JSON object, not a list'),
]


@pytest.fixture
def synced(run, database_url, write_response, tag_versions):
    """A database holding six versions, and its data as they must stay."""
    result = run("sync", "--from-file", write_response(tag_versions[:6]))
    assert result.exit_code == 0, result.stderr
    return data_tables(database_url)


def assert_failed_cleanly(result, database_url, before, message):
    """Exit 1, exactly that one sentence, no traceback, no data change, a failed row."""
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == PREFIX + message + "\n"
    assert data_tables(database_url) == before
    last = runs(database_url)[-1]
    assert (last["status"], last["error"]) == ("failed", message)
    assert (last["inserted"], last["updated"], last["removed"]) == (0, 0, 0)
    check_invariants(database_url)


@pytest.mark.parametrize("build,expected", [c[1:] for c in ITEM_CASES], ids=[c[0] for c in ITEM_CASES])
def test_bad_item_fails_naming_index_id_and_field(synced, run, database_url, tmp_path, tag_versions,
                                                   build, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_document(tag_versions, build(tag_versions))))
    result = run("sync", "--from-file", path)
    message = f"{path}: " + expected.format(id0=tag_versions[0]["id"], id1=tag_versions[1]["id"],
                                            id2=tag_versions[2]["id"])
    assert_failed_cleanly(result, database_url, synced, message)


@pytest.mark.parametrize("body,expected", [c[1:] for c in DOCUMENT_CASES], ids=[c[0] for c in DOCUMENT_CASES])
def test_bad_document_fails_with_one_sentence(synced, run, database_url, tmp_path, body, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(body)
    result = run("sync", "--from-file", path)
    assert_failed_cleanly(result, database_url, synced, f"the response from {path} {expected}")


def test_success_false_shows_the_apis_own_errors(synced, run, database_url, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"success": False, "errors": ["Internal error, please retry.", "code 17"]}))
    result = run("sync", "--from-file", path)
    assert_failed_cleanly(result, database_url, synced, f"QuantConnect reported success: false from {path}: "
                                                        "Internal error, please retry.; code 17")


def test_failed_run_json_output(synced, run, tmp_path, database_url):
    path = tmp_path / "bad.json"
    path.write_text("[]")
    result = run("sync", "--json", "--from-file", path)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"status": "failed", "run_id": runs(database_url)[-1]["id"],
                                         "error": f"the response from {path} is a JSON array, not an object"}


def test_dry_run_of_a_bad_answer_writes_no_run_row(synced, run, database_url, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[]")
    count = len(runs(database_url))
    result = run("sync", "--dry-run", "--from-file", path)
    assert result.exit_code == 1
    assert result.stderr.startswith(PREFIX) and result.stderr.count("\n") == 1
    assert len(runs(database_url)) == count


def test_unknown_fields_are_kept_in_raw(run, database_url, write_response, tag_versions):
    version = dict(tag_versions[0], engineFlavour={"arm64": True, "tags": ["gpu"]}, rank=3)
    document = {"success": True, "errors": [], "newTopLevel": "ignored", "versions": [version]}
    result = run("sync", "--from-file", write_response(document=document))
    assert result.exit_code == 0, result.stderr
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(select(lean_version.c.raw)).scalar_one()
    finally:
        engine.dispose()
    assert raw == version


# The same answers, from a real HTTP server: the message names the endpoint URL.
HTTP_CASES = [
    ("html-200", Reply(body="<html><head><title>Maintenance</title></head></html>", authenticate=False),
     "the response from {url} is HTML (it starts with '<html><head><title>Maintenance</title></')"),
    ("garbage-200", Reply(body="Service temporarily unavailable", authenticate=False),
     "the response from {url} is not JSON (it starts with 'Service temporarily unavailable')"),
    ("success-false", Reply(json={"success": False, "errors": ["Too many requests in the last minute"]}),
     "QuantConnect reported success: false from {url}: Too many requests in the last minute"),
    ("array", Reply(json=[{"id": 1}]), "the response from {url} is a JSON array, not an object"),
]


@pytest.mark.parametrize("reply,expected", [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_bad_answer_from_the_api(synced, run, database_url, tag_versions, reply, expected):
    with FakeQuantConnect(versions=tag_versions[:6]) as qc:
        qc.reply(reply)
        result = run("sync", "--retries", "2", env=qc.env())
        assert qc.count == 1  # a bad answer with HTTP 200 is not retried
        url = qc.url + "lean/versions/read"
    assert_failed_cleanly(result, database_url, synced, expected.format(url=url))
