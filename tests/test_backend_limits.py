"""Both backends keep the same history for every answer (issue 15, item 3).

What one backend would store and the other refuse is refused on both, as a
bad answer (tests/test_bad_answers.py has those cases); what is within the
limits of docs/schema.md is stored exactly on both. Here: values at the
limits, stored and read back the same on SQLite and PostgreSQL, and an
object just past the size limit, refused on both alike.
"""

import json
import random
import string
from decimal import Decimal

import msgspec
import pytest
from sqlalchemy import select

from dbstate import check_invariants, data_tables, engine_for, runs
from faults import leansync
from leansync.source.payload import MAX_HASH_BYTES, MAX_OBJECT_BYTES
from leansync.store.models import lean_hash, lean_version

PREFIX = "leansync: error: "


def incompressible(length: int) -> str:
    return "".join(random.Random(length).choice(string.ascii_letters + string.digits) for _ in range(length))


def version(id_: int, **changes) -> dict:
    return {"id": id_, "name": f"v{id_}", "description": "d", "ref": None, "leanHash": f"{abs(id_):040x}",
            "leanCloudHash": None, "public": True, "created": "2023-03-21 20:45:48", **changes}


AT_THE_LIMITS = [
    version(1, leanHash=incompressible(MAX_HASH_BYTES)),  # an index row PostgreSQL takes, uncompressed
    version(2, leanCloudHash="\U0001F600" * (MAX_HASH_BYTES // 4)),  # 4 bytes a character
    version(2**31 - 1), version(-2**31),  # lean_version.id is a 32-bit integer on PostgreSQL
    version(3, huge=123456789012345678901234567890123, tiny=-2**63 - 1, exact=0.1, big=1.5e308,
            longest=int("9" * 4300), spelled=1e20),  # the most digits leansync's parser reads
    version(4, description="\u2028 line separator, \U0001F600 and \uFFFF", **{"k" * 100_000: "a long key"}),
    version(5, description="x" * 1_000_000),
]


def as_json_numbers(value):
    """Numbers as the decimals JSON spells (1.5e308 is 15 followed by 307 zeros): PostgreSQL's jsonb
    gives 1.5e308 back as that integer, SQLite as the float; both are the JSON number sent."""
    if isinstance(value, dict):
        return {k: as_json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_numbers(v) for v in value]
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def stored(url: str) -> tuple[dict, set]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            raws = {row.id: row.raw for row in conn.execute(select(lean_version.c.id, lean_version.c.raw))}
            hashes = {tuple(row) for row in conn.execute(select(lean_hash.c.kind, lean_hash.c.hash))}
    finally:
        engine.dispose()
    return raws, hashes


def test_values_at_the_limits_are_stored_exactly(run, database_url, write_response):
    result = run("sync", "--json", "--from-file", write_response(AT_THE_LIMITS))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == len(AT_THE_LIMITS)
    raws, hashes = stored(database_url)
    assert as_json_numbers(raws) == as_json_numbers({v["id"]: v for v in AT_THE_LIMITS})
    assert ("lean", AT_THE_LIMITS[0]["leanHash"]) in hashes
    assert ("lean_cloud", AT_THE_LIMITS[1]["leanCloudHash"]) in hashes
    # Sent again with other spelling (keys reversed): decoded, compared with the stored state, unchanged.
    again = run("sync", "--json", "--from-file",
                write_response([dict(reversed(v.items())) for v in AT_THE_LIMITS]))
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == len(AT_THE_LIMITS)
    check_invariants(database_url)


def numbers_object(size: int) -> dict:
    """An object of exactly ``size`` bytes as JSON, its bulk an array of 1s: jsonb's worst case
    (about six times the text)."""
    base = version(6, x=[])
    fixed = len(json.dumps(base, separators=(",", ":")))
    count = (size - fixed + 1) // 2  # "1," per element, less the last comma
    extra = (size - fixed + 1) % 2
    item = version(6, x=[1] * count)
    if extra:
        item["description"] += "d"
    assert len(json.dumps(item, separators=(",", ":"))) == size
    return item


@pytest.mark.slow
def test_an_object_at_the_size_limit_is_stored(run, database_url, tmp_path):
    path = tmp_path / "big.json"
    item = numbers_object(MAX_OBJECT_BYTES)
    path.write_text(json.dumps({"success": True, "errors": [], "versions": [item]}))
    result = run("sync", "--json", "--from-file", path)
    assert result.exit_code == 0, result.stderr
    raws, _ = stored(database_url)
    assert raws == {6: item}


def test_an_object_over_the_size_limit_is_a_bad_answer(run, database_url, write_response, tmp_path):
    assert run("sync", "--from-file", write_response([version(7)])).exit_code == 0
    before = data_tables(database_url)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"success": True, "errors": [],
                                "versions": [version(7), numbers_object(MAX_OBJECT_BYTES + 1)]}))
    result = run("sync", "--from-file", path)
    message = (f"{path}: versions[1] (id 6): the object is {MAX_OBJECT_BYTES + 1:,} bytes long as JSON, more than "
               f"the {MAX_OBJECT_BYTES:,} the database is sure to store")
    assert (result.exit_code, result.stderr) == (1, PREFIX + message + "\n")
    assert data_tables(database_url) == before
    assert (runs(database_url)[-1]["status"], runs(database_url)[-1]["error"]) == ("failed", message)


# Near the deepest array leansync's parser reads inside an item (about 980 levels in the installed command:
# the parser's limit is Python's recursion limit, less the stack below it; deeper is a bad answer).
DEPTH = 950


def test_the_deepest_value_is_stored_and_read_back(database_url, tmp_path):
    """SQLite's JSON functions stop at depth 1,000, PostgreSQL's parser at its stack limit; a respelling is
    compared with the stored state on both. The installed command: in-process, pytest's own stack would
    leave the parser less room."""
    deepest = version(8, nested="DEEP")
    text = json.dumps({"success": True, "errors": [], "versions": [deepest]})
    path = tmp_path / "deep.json"
    path.write_text(text.replace('"DEEP"', "[" * DEPTH + "]" * DEPTH))
    result = leansync("sync", "--from-file", path, url=database_url)
    assert result.returncode == 0, result.stderr
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:  # as text: the stored value itself, not a Python parser's view of it
            raw = conn.exec_driver_sql(f"SELECT {'raw' if engine.dialect.name == 'sqlite' else 'raw::text'} "
                                       "FROM lean_version").scalar_one()
    finally:
        engine.dispose()
    nested = msgspec.json.decode(raw)["nested"]
    assert msgspec.json.encode(nested) == b"[" * DEPTH + b"]" * DEPTH
    respelled = tmp_path / "respelled.json"
    respelled.write_text(path.read_text().replace(", ", ","))  # decoded and compared with the stored state
    again = leansync("sync", "--json", "--from-file", respelled, url=database_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == 1
