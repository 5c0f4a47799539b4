"""Fuzzed answers (issue 11, item 6): arbitrary JSON documents and mutations of valid responses.

Every body gives one of two outcomes, never a traceback or another exit code:

- a successful sync whose stored state equals the payload, strictly: each
  listed version's `raw` is JSON-equal to the object sent (``true`` is not
  ``1``), its text fields are stored exactly (no U+FFFD), and the listed ids
  are exactly the payload's;
- exit 1 with one line on stderr, the data unchanged and a `failed` run.

What JSON (RFC 8259) forbids must be refused: invalid UTF-8 (UTF-8-encoded
surrogates included), raw control characters in strings, numbers with
leading zeros, NaN and Infinity; and what no database column can hold
exactly: lone surrogates. A UTF-8 BOM may be taken or refused.

The sync runs in-process (CliRunner) on one database per backend, reused
from example to example and compared before and after each: thousands of
examples in seconds. Derandomized, so CI runs the same examples every time.
"""

import json
import re
import sys
from datetime import datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from leansync.cli import cli

SQLITE_EXAMPLES = 2_000
POSTGRES_EXAMPLES = 300
FIELD_COLUMNS = {"name": "name", "description": "description", "ref": "ref", "leanHash": "lean_hash",
                 "leanCloudHash": "lean_cloud_hash", "public": "public", "created": "created"}
TEXT_KEYS = ("name", "description", "ref", "leanHash", "leanCloudHash")
BOM = b"\xef\xbb\xbf"
NOT_JSON = object()  # the reference parser's verdict on a body that is not strict JSON


def fuzz_settings(examples: int):
    """Derandomized (the same examples on every run) and without the shrink phase, which can take
    minutes: a failure shows the generated body itself, reproducible from its blob."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])


# -- what is sent --------------------------------------------------------------

texts = st.text(max_size=12)  # hypothesis leaves out surrogates unless asked for them
hex40 = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
created = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))  # the API's format
ids = st.integers(min_value=1, max_value=40)  # a small pool: versions come, change, go and come back

version = st.fixed_dictionaries(
    {"id": ids, "name": texts, "description": texts, "leanHash": hex40, "public": st.booleans(),
     "created": created},
    optional={"ref": st.one_of(st.none(), texts), "leanCloudHash": st.one_of(st.none(), hex40),
              "extra": texts})
responses = st.fixed_dictionaries({"versions": st.lists(version, max_size=4, unique_by=lambda v: v["id"]),
                                   "success": st.just(True), "errors": st.just([])})

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=10)
odd_ids = st.one_of(st.integers(min_value=-2**80, max_value=2**80),
                    st.sampled_from([0, -1, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 10**30]),
                    ids.map(float), st.floats(allow_nan=False, allow_infinity=False), st.just(True))
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
controls = st.characters(max_codepoint=0x1F)


DEEP = "deeply-nested-lists-"  # a placeholder serialise() replaces: json.dumps would recurse too deep
DEEP_TEXT = re.compile(rb'"deeply-nested-lists-(\d+)"')


@st.composite
def mutated_documents(draw) -> object:
    """A valid response, then a few changes of the kinds a broken or hostile server makes."""
    document = draw(responses)
    items = document["versions"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["wrong type", "missing key", "extra key", "odd id", "deep", "long text",
                                     "surrogate", "nul", "duplicate id", "top level"]))
        if kind == "top level" or not items:
            document[draw(st.sampled_from(["versions", "success", "errors", "other"]))] = draw(json_values)
            items = document["versions"] if isinstance(document.get("versions"), list) else []
            continue
        item = draw(st.sampled_from(items))
        if not isinstance(item, dict):
            continue
        key = draw(st.sampled_from(["id", *FIELD_COLUMNS]))
        if kind == "wrong type":
            item[key] = draw(json_values)
        elif kind == "missing key":
            item.pop(key, None)
        elif kind == "extra key":
            item[draw(texts)] = draw(json_values)
        elif kind == "odd id":
            item["id"] = draw(odd_ids)
        elif kind == "deep":
            item[draw(st.sampled_from(["nested", "description"]))] = DEEP + str(draw(st.integers(1, 3000)))
        elif kind == "long text":
            item[draw(st.sampled_from(TEXT_KEYS))] = draw(st.text(min_size=1, max_size=24)) * draw(
                st.integers(100, 4000))  # up to ~100,000 characters
        elif kind in ("surrogate", "nul"):
            key = draw(st.sampled_from(TEXT_KEYS))
            odd = draw(surrogates) if kind == "surrogate" else "\x00"
            item[key] = str(item.get(key, "")) + odd
        elif kind == "duplicate id":
            items.append(dict(draw(st.sampled_from(items)), description=draw(texts)))
    return document


def serialise(document, *, ascii_only: bool) -> bytes:
    text = json.dumps(document, ensure_ascii=ascii_only, allow_nan=False)
    body = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes (invalid) UTF-8 bytes
    return DEEP_TEXT.sub(lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), body)


STRING_START = re.compile(rb'(?<=[:,\[] ")|(?<=\[")')
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80"]


@st.composite
def mutated_bytes(draw, body: bytes) -> bytes:
    """Changes to the text itself: what no JSON encoder would write."""
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        kind = draw(st.sampled_from(["bom", "invalid utf-8", "control", "leading zero", "duplicate key", "cut"]))
        starts = [m.start() for m in STRING_START.finditer(body)]
        if kind == "bom":
            body = BOM + body
        elif kind in ("invalid utf-8", "control") and starts:
            at = draw(st.sampled_from(starts))
            odd = draw(st.sampled_from(INVALID_UTF8)) if kind == "invalid utf-8" else draw(controls).encode()
            body = body[:at] + odd + body[at:]
        elif kind == "leading zero":
            body = re.sub(rb'"id": (-?)(\d)', rb'"id": \g<1>0\2', body, count=draw(st.integers(1, 3)))
        elif kind == "duplicate key" and b'{"id"' in body:
            key = draw(st.sampled_from(["id", *TEXT_KEYS]))
            value = json.dumps(draw(st.one_of(ids, texts))).encode()
            body = body.replace(b'{"id"', b'{"' + key.encode() + b'": ' + value + b', "id"', 1)
        elif kind == "cut" and body:
            body = body[:draw(st.integers(min_value=0, max_value=len(body) - 1))]
    return body


@st.composite
def bodies(draw) -> bytes:
    document = draw(st.one_of(json_values, responses, mutated_documents(), mutated_documents()))
    body = serialise(document, ascii_only=draw(st.booleans()))
    return draw(mutated_bytes(body))


# -- the reference: strict JSON, and what a successful sync must have stored -----

def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def reference(body: bytes):
    """The body as strict JSON reads it (numbers as int/Decimal), or NOT_JSON."""
    body = body.removeprefix(BOM)
    try:
        text = body.decode("utf-8")  # strict: refuses encoded surrogates too
    except UnicodeDecodeError:
        return NOT_JSON
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # the deep mutations go 3,000 levels down
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)  # strict=True: no raw controls
    except (ValueError, RecursionError):
        return NOT_JSON
    finally:
        sys.setrecursionlimit(limit)


def same(a, b) -> bool:
    """JSON equality with types: true is not 1, 1 equals 1.0 (one number), strings exact.

    Iterative: the deep mutations nest thousands of levels."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if type(x) is not type(y) or x != y:
                return False
        elif isinstance(x, (int, Decimal)) and isinstance(y, (int, Decimal)):
            if Decimal(x) != Decimal(y):
                return False
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif type(x) is not type(y) or x != y:
            return False
    return True


def has_lone_surrogate(value) -> bool:
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if any("\ud800" <= c <= "\udfff" for c in value):
                return True
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
    return False


class Target:
    """One database for all examples of a backend, read back between them."""

    def __init__(self, url: str):
        self.url = url
        self.raw_text = "raw" if url.startswith("sqlite") else "raw::text"
        # A database with its schema and one run, so every example finds a state to compare.
        first = CliRunner().invoke(cli, ["--database-url", url, "sync", "--from-file", "-"],
                                   input=json.dumps({"versions": [], "success": True}), catch_exceptions=False)
        assert first.exit_code == 0, first.stderr
        self.engine = create_engine(url)
        self.known = self.state()  # the data now: each example compares against it, then updates it

    def state(self) -> dict:
        with self.engine.connect() as conn:
            return {table: conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}").all()
                    for table, order in (("lean_version", "id"), ("lean_hash", "kind, hash"),
                                         ("lean_version_history", "id"))}

    def runs(self) -> tuple:
        """How many runs, and the newest one's id and status."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT (SELECT count(*) FROM sync_run), id, status FROM sync_run "
                                        "ORDER BY id DESC LIMIT 1").one()

    def listed(self) -> dict[int, dict]:
        columns = ", ".join(FIELD_COLUMNS.values())
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT id, {self.raw_text}, {columns} FROM lean_version WHERE removed_at IS NULL").all()
        return {row[0]: {"raw": row[1], **dict(zip(FIELD_COLUMNS, row[2:]))} for row in rows}


def check_one(target: Target, body: bytes) -> None:
    runs_before, known = target.runs(), target.known
    result = CliRunner().invoke(cli, ["--database-url", target.url, "sync", "-q", "--allow-mass-removal",
                                      "--from-file", "-"], input=body, catch_exceptions=False)
    target.known = target.state()  # first, so that one failed example does not mislead the next
    expected = reference(body)
    if result.exit_code == 0:
        assert expected is not NOT_JSON, f"a body that is not strict JSON was taken: {body[:300]!r}"
        assert result.stderr == ""
        assert_stored(target, expected)
        assert target.runs()[2] == "success"
        return
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("leansync: error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, result.stderr
    assert target.known == known, "a failed run changed data"
    count, newest, status = target.runs()
    assert count == runs_before[0] + 1 and newest > runs_before[1] and status == "failed", (
        "the failed run was not recorded")


def assert_stored(target: Target, document) -> None:
    assert isinstance(document, dict) and isinstance(document.get("versions"), list), document
    items = document["versions"]
    assert all(isinstance(item, dict) for item in items)
    assert not any(has_lone_surrogate(item) for item in items), "a lone surrogate was taken"
    sent = {item.get("id"): item for item in items}
    assert len(sent) == len(items), "duplicate ids were taken"
    listed = target.listed()
    assert sorted(listed, key=repr) == sorted(sent, key=repr), "the listed ids are not the payload's"
    for version_id, item in sent.items():
        row = listed[version_id]
        raw = row["raw"] if isinstance(row["raw"], str) else json.dumps(row["raw"])
        assert same(reference(raw.encode("utf-8", "surrogatepass")), item), (version_id, raw, item)
        for key in TEXT_KEYS:
            assert same(row[key], item.get(key)), (version_id, key, row[key], item.get(key))
        public, stored = item.get("public"), row["public"]  # SQLite's driver gives 0/1
        assert (stored is None) == (public is None) and (public is None or bool(stored) == bool(public)), (
            version_id, public, stored)
        assert (row["created"] is None) == (item.get("created") is None), (version_id, item.get("created"))


# -- the tests -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sqlite_target(tmp_path_factory):
    target = Target(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}")
    yield target
    target.engine.dispose()


@pytest.fixture(scope="module")
def postgres_target(postgres_cluster):
    name = postgres_cluster.create_database()
    target = Target(postgres_cluster.url(name))
    yield target
    target.engine.dispose()
    postgres_cluster.drop_database(name)


CASES = {  # the strictness rules, and what the fuzzers found, one example each
    "UTF-8-encoded surrogate": (b'{"versions": [{"id": 1, "name": "a\xed\xa0\x80"}], "success": true}'),
    "UTF-8-encoded surrogate in a key outside the versions": (
        b'{"versions": [], "\xed\xa0\x80x": 1, "success": true}'),
    "invalid UTF-8 in a value outside the versions": (
        b'{"versions": [], "other": {"\xf4\x90\x80\x80": "a\xff"}, "success": true}'),
    "invalid UTF-8": (b'{"versions": [{"id": 1, "name": "a\xff"}], "success": true}'),
    "raw control character": (b'{"versions": [{"id": 1, "name": "a\x01b"}], "success": true}'),
    "leading zero": (b'{"versions": [{"id": 017}], "success": true}'),
    "NaN": (b'{"versions": [{"id": 1, "extra": NaN}], "success": true}'),
    "Infinity": (b'{"versions": [{"id": 1, "extra": -Infinity}], "success": true}'),
    "lone surrogate": (b'{"versions": [{"id": 1, "name": "\\ud800"}], "success": true}'),
    "an array for an id": (b'{"versions": [{"id": []}], "success": true}'),
    "an object for an id": (b'{"versions": [{"id": {}}], "success": true}'),
    "nested 5,000 deep": (b'{"versions": [{"id": 1, "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"),
    "nested 5,000 deep outside the versions": (
        b'{"versions": [], "other": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "true for public is not 1": (b'{"versions": [{"id": 2, "public": 1, "extra": true}], "success": true}'),
    "a BOM": (BOM + b'{"versions": [{"id": 3, "name": "x"}], "success": true}'),
}


@pytest.mark.parametrize("why", list(CASES))
def test_hard_cases_give_one_of_the_two_outcomes(sqlite_target, why):
    check_one(sqlite_target, CASES[why])


@fuzz_settings(SQLITE_EXAMPLES)
@given(body=bodies())
def test_fuzzed_answers_on_sqlite(sqlite_target, body):
    check_one(sqlite_target, body)


@fuzz_settings(POSTGRES_EXAMPLES)
@given(body=bodies())
def test_fuzzed_answers_on_postgresql(postgres_target, body):
    check_one(postgres_target, body)
