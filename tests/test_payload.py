"""leansync.source.payload on valid answers: what is accepted and how it is normalised.

The bad-answer matrix (wrong types, success: false, HTML...) is tested
through the CLI in tests/test_bad_answers.py.
"""

import json
from datetime import datetime, timedelta, timezone

import pytest

from leansync.errors import PayloadError
from leansync.store.models import API_FIELDS
from leansync.source.payload import (
    FIELD_KEYS,
    INT32,
    MODELLED_KEYS,
    decode_all,
    decode_version,
    digest,
    parse_created,
    parse_json,
    split_items,
)

UTC = timezone.utc
FULL = {
    "id": 17810,
    "created": "2023-03-21 20:45:48",
    "description": "Merge pull request #7000",
    "leanHash": "692bae1d6f24b3fad52e269f4a1e2425fc31d8e0",
    "leanCloudHash": "f9cad3dc0cf6207a176f7cc770fe38a31248ddb0",
    "name": "v2.5.17810",
    "ref": "master",
    "public": True,
}


def validate(*items, **document):
    return decode_all(json.dumps({"versions": list(items), "success": True, "errors": [], **document}), source="test")


def fields(version) -> dict:
    return dict(zip(API_FIELDS, version.fields))


def test_field_keys_follow_the_table_order():
    assert tuple(column for column, _ in FIELD_KEYS) == API_FIELDS


def test_full_version():
    [v] = validate(FULL)
    assert v.id == 17810
    assert fields(v) == {
        "name": "v2.5.17810",
        "description": "Merge pull request #7000",
        "ref": "master",
        "lean_hash": "692bae1d6f24b3fad52e269f4a1e2425fc31d8e0",
        "lean_cloud_hash": "f9cad3dc0cf6207a176f7cc770fe38a31248ddb0",
        "public": True,
        "created": datetime(2023, 3, 21, 20, 45, 48, tzinfo=UTC),
    }
    assert json.loads(v.raw) == FULL
    assert v.extra is None


# --- created --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The real API: space, no zone, meaning UTC.
        ("2023-03-21 20:45:48", datetime(2023, 3, 21, 20, 45, 48, tzinfo=UTC)),
        # The documentation's example: ISO 8601 with milliseconds and Z.
        ("2021-11-26T15:18:27.693Z", datetime(2021, 11, 26, 15, 18, 27, 693000, tzinfo=UTC)),
        ("2021-11-26T15:18:27Z", datetime(2021, 11, 26, 15, 18, 27, tzinfo=UTC)),
        ("2021-11-26T15:18:27", datetime(2021, 11, 26, 15, 18, 27, tzinfo=UTC)),
        ("2021-11-26T15:18:27+00:00", datetime(2021, 11, 26, 15, 18, 27, tzinfo=UTC)),
        # Offsets are converted to UTC, also across a day boundary.
        ("2021-11-26T17:18:27+02:00", datetime(2021, 11, 26, 15, 18, 27, tzinfo=UTC)),
        ("2021-11-26T20:30:00-05:30", datetime(2021, 11, 27, 2, 0, 0, tzinfo=UTC)),
        ("2021-01-01T01:00:00+03:00", datetime(2020, 12, 31, 22, 0, 0, tzinfo=UTC)),
        # .NET writes 7 fractional digits; Python keeps microseconds (6).
        ("2021-11-26T15:18:27.1234567Z", datetime(2021, 11, 26, 15, 18, 27, 123456, tzinfo=UTC)),
        ("2021-11-26T15:18:27.1234567+01:00", datetime(2021, 11, 26, 14, 18, 27, 123456, tzinfo=UTC)),
        ("2023-03-21 20:45:48.5", datetime(2023, 3, 21, 20, 45, 48, 500000, tzinfo=UTC)),
    ],
)
def test_created_formats(text, expected):
    [v] = validate({"id": 1, "created": text})
    created = fields(v)["created"]
    assert created == expected
    # Always an aware datetime in UTC itself, not merely an equal instant.
    assert created.utcoffset() == timedelta(0)
    assert created.tzinfo == UTC
    assert json.loads(v.raw)["created"] == text  # raw keeps what the API sent


def test_parse_created_same_instant_from_both_formats():
    assert parse_created("2021-11-26 15:18:27") == parse_created("2021-11-26T15:18:27Z") \
        == parse_created("2021-11-26T10:18:27-05:00")


# --- public ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (1, True), (0, False), (None, None)])
def test_public_values(value, expected):
    [v] = validate({"id": 1, "public": value})
    assert fields(v)["public"] is expected
    assert json.loads(v.raw)["public"] == value


def test_public_1_and_true_are_the_same_field():
    [a, b] = validate({"id": 1, "public": 1}, {"id": 2, "public": True})
    assert a.fields == b.fields


# --- optional fields, extra fields ----------------------------------------------------------------


def test_only_id_gives_all_fields_none():
    [v] = validate({"id": 5})
    assert v.fields == (None,) * 7
    assert json.loads(v.raw) == {"id": 5}


@pytest.mark.parametrize("key", [k for k in FULL if k != "id"])
def test_each_optional_field_may_be_missing(key):
    item = {k: val for k, val in FULL.items() if k != key}
    [v] = validate(item)
    column = dict((json_key, column) for column, json_key in FIELD_KEYS)[key]
    assert fields(v)[column] is None
    assert sum(value is None for value in v.fields) == 1


@pytest.mark.parametrize("key", [k for k in FULL if k != "id"])
def test_each_optional_field_may_be_null(key):
    [v] = validate({**FULL, key: None})
    column = dict((json_key, column) for column, json_key in FIELD_KEYS)[key]
    assert fields(v)[column] is None
    assert json.loads(v.raw)[key] is None


def test_strings_are_kept_verbatim():
    item = {"id": 1, "name": "", "description": "  Ünïcode ✓ \n second line ", "ref": "refs/tags/2.5", "leanHash": ""}
    [v] = validate(item)
    assert fields(v)["name"] == ""
    assert fields(v)["description"] == "  Ünïcode ✓ \n second line "
    assert fields(v)["ref"] == "refs/tags/2.5"
    assert fields(v)["lean_hash"] == ""  # the diff, not validation, treats "" as no hash


def test_unknown_fields_are_kept_in_raw_and_extra():
    item = {**FULL, "leanVersionTag": "2.5.17810", "nested": {"a": [1, 2.5, None]}, "flag": False, "k": None}
    [v] = validate(item)
    assert json.loads(v.raw) == item
    assert v.extra == {"leanVersionTag": "2.5.17810", "nested": {"a": [1, 2.5, None]}, "flag": False, "k": None}
    assert fields(v)["name"] == "v2.5.17810"  # the modelled fields are unaffected


def test_modelled_keys_are_id_and_the_seven_fields():
    assert MODELLED_KEYS == {"id", *(key for _, key in FIELD_KEYS)}


# --- the document ---------------------------------------------------------------------------------


def test_success_missing_is_accepted():
    [v] = decode_all(json.dumps({"versions": [FULL]}), source="test")
    assert v.id == 17810


def test_errors_missing_and_extra_top_level_keys_are_accepted():
    versions = decode_all(json.dumps({"versions": [{"id": 1}], "success": True, "page": 1}), source="test")
    assert [v.id for v in versions] == [1]


def test_empty_list():
    assert validate() == []


def test_order_is_kept():
    ids = [18024, 3, 17000, -4, 9]
    assert [v.id for v in validate(*({"id": i} for i in ids))] == ids


@pytest.mark.parametrize("id_", [0, -1, INT32 - 1, -INT32])
def test_id_range_edges_are_accepted(id_):
    [v] = validate({"id": id_})
    assert v.id == id_


def test_shared_hashes_are_accepted():
    versions = validate({"id": 1, "leanHash": "same"}, {"id": 2, "leanHash": "same"})
    assert [fields(v)["lean_hash"] for v in versions] == ["same", "same"]


def test_a_realistic_document_round_trips_through_json(tag_versions):
    text = json.dumps({"versions": tag_versions[:50], "success": True, "errors": []})
    versions = decode_all(text.encode(), source="file")
    assert [json.loads(v.raw) for v in versions] == tag_versions[:50]
    assert all(fields(v)["created"].tzinfo == UTC for v in versions)


# --- parse_json -----------------------------------------------------------------------------------


def test_parse_json_accepts_str_and_utf8_bytes():
    document = {"versions": [{"id": 1, "description": "Ünïcode"}]}
    assert parse_json(json.dumps(document), source="x") == document
    assert parse_json(json.dumps(document, ensure_ascii=False).encode("utf-8"), source="x") == document


def test_parse_json_accepts_a_utf8_byte_order_mark():
    # Files saved by Windows tools (PowerShell's Out-File) often start with one.
    document = {"versions": [{"id": 1}], "success": True}
    assert parse_json(b"\xef\xbb\xbf" + json.dumps(document).encode(), source="x") == document


# --- split_items: the items' bytes as sent, undecoded ------------------------------------------------


def test_split_items_keeps_each_items_bytes_exactly_as_sent():
    text = '{"versions": [ {"id": 1,  "name": "a"} ,{"id":2}\n], "success": true}'
    items = split_items(text.encode("utf-8"), source="s")
    assert [bytes(item) for item in items] == [b'{"id": 1,  "name": "a"}', b'{"id":2}']


@pytest.mark.parametrize("text", [
    ' \n{ "success" : true ,\t"versions" :[]}\r\n',
    '{"versions": [{"id": 1}], "versions": [{"id": 2}]}',  # a repeated key: the last wins, as in json.loads
    '{"a": "versions", "versions": [{"id": 1, "description": "\\u00e9 \\"q\\" ]}"}]}',
])
def test_split_items_finds_what_json_loads_finds(text):
    expected = json.loads(text)["versions"]
    assert [json.loads(bytes(item)) for item in split_items(text.encode(), source="s")] == expected


@pytest.mark.parametrize("text", ['{"versions": [1,]}', '{"versions": [] ', '{"versions": []} x', "<html>",
                                  '{"versions": ["\\ud800"]}',  # a lone surrogate
                                  '{"versions": [{"id": 1, "name": "a\x01b"}]}',  # a raw control character
                                  '{"versions": [{"id": 01}]}'])  # a leading zero
def test_split_items_rejects_what_is_not_json(text):
    with pytest.raises(PayloadError, match="the response from s is (not JSON|HTML)"):
        split_items(text.encode(), source="s")


def test_a_utf8_byte_order_mark_is_accepted():
    # Files saved by Windows tools (PowerShell's Out-File) often start with one.
    document = {"versions": [{"id": 1}], "success": True}
    body = b"\xef\xbb\xbf" + json.dumps(document).encode()
    assert parse_json(body, source="x") == document
    assert [v.id for v in decode_all(body, source="x")] == [1]


# --- digest ----------------------------------------------------------------------------------------


def test_the_digest_is_of_the_bytes_as_sent():
    a, b, c = split_items(b'{"versions": [{"id": 1}, {"id": 1}, {"id" : 1}]}', source="s")
    assert digest(a) == digest(b) == decode_version(a, index=0, source="s").digest
    assert digest(a) != digest(c)  # the same object spelled otherwise: decoded and compared by the run
    assert len(digest(a)) == 32 and int(digest(a), 16) >= 0


# --- strict JSON, as PostgreSQL and the history need ---------------------------------------------


@pytest.mark.parametrize(("item", "reason"), [
    (b'{"id": 1, "name": "\xff"}', "invalid UTF-8"),
    (b'{"id": 1, "name": "\xed\xa0\x80"}', "invalid UTF-8"),  # a UTF-8-encoded surrogate
    (b'{"id": 1, "x": 1e400}', "out of range"),
])
def test_an_item_that_is_not_strict_json_is_refused_naming_it(item, reason):
    body = b'{"versions": [{"id": 7}, ' + item + b"]}"
    with pytest.raises(PayloadError, match=rf"^s: versions\[1\] is not valid JSON \(.*{reason}"):
        decode_all(body, source="s")


def test_a_key_sent_twice_keeps_its_last_value_everywhere():
    [v] = decode_all(b'{"versions": [{"id": 1, "name": "a", "x": 1, "name": "b", "x": 2}]}', source="s")
    assert fields(v)["name"] == "b"
    assert v.extra == {"x": 2}
    assert json.loads(v.raw) == {"id": 1, "name": "b", "x": 2}


def test_raw_is_json_equal_to_what_was_sent_and_keeps_types():
    item = {"id": 1, "public": 1, "n": 1.0, "big": 10**30, "t": "é ✓", "nested": {"b": [True, None]}}
    [v] = decode_all(json.dumps({"versions": [item]}, ensure_ascii=False).encode(), source="s")
    stored = json.loads(v.raw)
    assert stored == item
    assert stored["public"] is not True and type(stored["n"]) is float  # 1 is not true; 1.0 stays a float
    assert fields(v)["public"] is True  # the modelled field takes 0/1 as a boolean


def test_duplicate_ids_are_refused_naming_both_items():
    with pytest.raises(PayloadError, match=r"^s: versions\[2\] \(id 1\) repeats the id of versions\[0\]$"):
        decode_all(b'{"versions": [{"id": 1}, {"id": 2}, {"id": 1, "name": "other"}]}', source="s")


def test_invalid_utf8_outside_the_versions_is_refused_too():
    body = b'{"versions": [], "other": {"k": "a\xff"}, "success": true}'
    with pytest.raises(PayloadError, match=r'^the response from s is not valid JSON: its "other" holds invalid UTF-8'):
        split_items(body, source="s")


def test_nesting_deeper_than_msgspec_reads_is_one_sentence_not_a_recursion_error():
    deep = b'{"versions": [{"id": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    with pytest.raises(PayloadError, match="^the response from s nests its values too deeply to be read$"):
        decode_all(deep, source="s")


def test_a_nul_deep_inside_is_found_without_recursion():
    item = b'{"id": 1, "x": ' + b"[" * 900 + b'"\\u0000"' + b"]" * 900 + b"}"
    with pytest.raises(PayloadError, match="NUL character"):
        decode_version(item, index=0, source="s")
    [v] = decode_all(b'{"versions": [' + item.replace(b"\\u0000", b"a") + b"]}", source="s")
    assert v.extra is not None
