"""Parse and validate a `lean/versions/read` response, with msgspec.

A run splits the response into its items' bytes without decoding them
(split_items), recognises each item whose bytes are exactly the ones stored
by their digest, and decodes and validates only the others (decode_version):
an unchanged version costs one digest, whatever the backend. Everything the
API sends is checked before anything is written, so a bad answer fails the
run with one sentence that names the item and field.

The schema of an item is the `Item` struct: the type does the validation.
Only when it fails are the messages built, by `_explain`, which names the
first bad field in column order with the value as sent.
"""

import hashlib
import json
from itertools import islice
from datetime import datetime, timezone
from typing import Annotated, Any, NamedTuple

import msgspec

from leansync.errors import PayloadError

# (column name, JSON key) for the seven API fields, in lean_version column order.
FIELD_KEYS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("description", "description"),
    ("ref", "ref"),
    ("lean_hash", "leanHash"),
    ("lean_cloud_hash", "leanCloudHash"),
    ("public", "public"),
    ("created", "created"),
)
# Every other key of an item is kept in `extra`.
MODELLED_KEYS = frozenset({"id", *(key for _, key in FIELD_KEYS)})
INT32 = 2**31  # lean_version.id is a 32-bit integer on PostgreSQL
# What PostgreSQL cannot store, refused on every backend so both keep the same
# history (docs/schema.md, "Limits"). A hash is a key of lean_hash's btree
# index, whose rows PostgreSQL caps near 2,700 bytes (after compression, so
# the cap on what is sent is lower and certain). An object's jsonb can take
# about six times its JSON text ([1,1,...]), and jsonb holds at most 256 MiB.
MAX_HASH_BYTES = 2_000
MAX_OBJECT_BYTES = 16 * 2**20
BOM = b"\xef\xbb\xbf"  # json.loads accepted one in front of the body; so do we

Text = str | None


class Item(msgspec.Struct):
    """One element of "versions", as validation sees it (other keys are allowed)."""

    id: Annotated[int, msgspec.Meta(ge=-INT32, lt=INT32)]
    name: Text = None
    description: Text = None
    ref: Text = None
    leanHash: Text = None
    leanCloudHash: Text = None
    public: bool | Annotated[int, msgspec.Meta(ge=0, le=1)] | None = None  # 0/1 taken as a boolean
    created: Text = None  # parsed by parse_created: the API's space-separated form is not RFC 3339


class Version(NamedTuple):
    """One version as the API lists it, decoded and validated."""

    id: int
    fields: tuple  # the seven modelled fields in models.API_FIELDS order
    extra: dict | None  # the object's other keys, as sent; None when there are none
    raw: str  # the whole object as JSON text (JSON-equal to what was sent), for lean_version.raw
    digest: str  # digest() of the item's bytes as sent


_any = msgspec.json.Decoder()
_document = msgspec.json.Decoder(dict[str, msgspec.Raw])  # the top level, its values left undecoded
_items = msgspec.json.Decoder(list[msgspec.Raw])  # "versions", its items left undecoded
_encode = msgspec.json.Encoder().encode


DIGEST_SIZE = 16


def digest(item: bytes) -> str:
    """The hex BLAKE2b-128 of an item's bytes as sent (lean_version.raw_digest)."""
    return hashlib.blake2b(item, digest_size=DIGEST_SIZE).hexdigest()


class _Id(msgspec.Struct):
    id: int


_id_only = msgspec.json.Decoder(_Id)


def decode_id(item: bytes) -> int | None:
    """The item's id, read without decoding the rest (None: not an object with an integer id).

    Used only to find the stored digest an item's bytes may equal; whatever
    differs is decoded and validated in full (decode_version).
    """
    try:
        return _id_only.decode(item).id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def parse_json(data: bytes | str, *, source: str) -> Any:
    """Parse a whole body, with a clear message for HTML or garbage."""
    data = _without_bom(data)
    try:
        return _any.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # a number out of range, deep nesting
        raise _not_json(data, source) from None


def split_items(body: bytes | str, *, source: str) -> list[msgspec.Raw]:
    """The items of the response's "versions" array, each as its bytes as sent, in order.

    Only the top level is decoded (and "success"/"errors"); the items are
    checked for JSON syntax but not decoded.
    """
    body = _without_bom(body)
    try:
        document = _document.decode(body)
    except msgspec.ValidationError:  # JSON, but not an object
        raise PayloadError(
            f"the response from {source} is a JSON {_json_type(parse_json(body, source=source))}, not an object"
        ) from None
    except msgspec.DecodeError:
        raise _not_json(body, source) from None
    except RecursionError:
        raise PayloadError(f"the response from {source} nests its values too deeply to be read") from None
    # The top level's other values are decoded too, though only two are read:
    # what was checked for syntax only might hold invalid UTF-8 (see decode_version).
    values = {}
    for key, value in document.items():
        if key != "versions":
            try:
                values[key] = _any.decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                raise PayloadError(f'the response from {source} is not valid JSON: its "{key}" holds '
                                   f"{_reason(exc)}") from None
    status = {key: values[key] for key in ("success", "errors") if key in values}
    errors = api_errors(status)
    if errors is not None:
        shown = "; ".join(errors) if errors else "no error message"
        raise PayloadError(f"QuantConnect reported success: false from {source}: {shown}")
    if "versions" not in document:
        raise PayloadError(f'the response from {source} has no "versions" list')
    try:
        return _items.decode(document["versions"])
    except msgspec.ValidationError:
        kind = _json_type(parse_json(document["versions"], source=source))
        raise PayloadError(f'the response from {source} has "versions" as a JSON {kind}, not a list') from None


def api_errors(document: Any) -> list[str] | None:
    """The API's own error messages if it reported `success: false`, else None."""
    if isinstance(document, dict) and document.get("success") is False:
        errors = document.get("errors")
        if isinstance(errors, list):
            return [str(e) for e in errors]
        return [str(errors)] if errors else []
    return None


def decode_version(item: bytes, *, index: int, source: str) -> Version:
    """Decode and validate one item of "versions" (``index`` is its position)."""
    # The hot path of an initial load (once per version): messages are built only on error.
    try:
        value = _any.decode(item)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        # Invalid UTF-8 (surrogates included) or a number out of range: the
        # body's JSON syntax was checked by split_items, its strings were not.
        raise PayloadError(f"{source}: versions[{index}] is not valid JSON ({_reason(exc)})") from None
    if type(value) is not dict:
        raise PayloadError(f"{source}: versions[{index}] is a JSON {_json_type(value)}, not an object")
    try:
        typed = msgspec.convert(value, Item)
    except msgspec.ValidationError as exc:
        where = f"{source}: versions[{index}]"
        raise _explain(value, where) or PayloadError(f"{where}: {_reason(exc)}") from None
    created = typed.created
    if created is not None:
        try:
            created = parse_created(created)
        except ValueError:
            raise PayloadError(f'{source}: versions[{index}] (id {typed.id}): field "created" is not a valid '
                               f"timestamp: {typed.created!r}") from None
        except OverflowError:  # a valid date whose offset takes it past year 1 or 9999 in UTC
            raise PayloadError(f'{source}: versions[{index}] (id {typed.id}): field "created" leaves the calendar '
                               f"(years 1 to 9999) once converted to UTC: {typed.created!r}") from None
    # Encoded again rather than kept as sent: a key sent twice keeps its last
    # value, in raw as in the fields and extra (and as PostgreSQL's jsonb does).
    try:
        raw = _encode(value)
    except RecursionError as exc:  # it decoded, but encoding takes more of the stack (a run decodes mid-write)
        raise PayloadError(f"{source}: versions[{index}] is not valid JSON ({_reason(exc)})") from None
    # PostgreSQL can store no NUL character (\u0000), in text or jsonb: refuse it
    # on every backend, so both keep the same history. JSON can only spell it escaped.
    if b"\\u0000" in raw and _holds_nul(value):
        raise PayloadError(f"{source}: versions[{index}] (id {typed.id}): a string holds a NUL character "
                           "(\\u0000), which the database cannot store")
    if len(raw) > MAX_OBJECT_BYTES:
        raise PayloadError(f"{source}: versions[{index}] (id {typed.id}): the object is {len(raw):,} bytes long as "
                           f"JSON, more than the {MAX_OBJECT_BYTES:,} the database is sure to store")
    for key, hash_ in (("leanHash", typed.leanHash), ("leanCloudHash", typed.leanCloudHash)):
        # len(str) first: most hashes are 40 characters, and no character takes more than 4 bytes.
        if hash_ is not None and len(hash_) > MAX_HASH_BYTES // 4 and (size := len(hash_.encode())) > MAX_HASH_BYTES:
            raise PayloadError(f'{source}: versions[{index}] (id {typed.id}): field "{key}" is {size:,} bytes long, '
                               f"more than the {MAX_HASH_BYTES:,} a hash may have (the database indexes hashes)")
    public = typed.public
    fields = (typed.name, typed.description, typed.ref, typed.leanHash, typed.leanCloudHash,
              public if public is None else bool(public), created)
    extra = None if value.keys() <= MODELLED_KEYS else {k: v for k, v in value.items() if k not in MODELLED_KEYS}
    return Version(typed.id, fields, extra, raw.decode(), digest(item))


def decode_all(body: bytes | str, *, source: str) -> list[Version]:
    """Every item decoded and validated, duplicate ids refused (a run with nothing stored)."""
    versions = [decode_version(item, index=i, source=source) for i, item in enumerate(split_items(body, source=source))]
    first: dict[int, int] = {}
    for index, version in enumerate(versions):
        earlier = first.setdefault(version.id, index)
        if earlier != index:
            raise duplicate_id_error(source=source, index=index, version_id=version.id, earlier=earlier)
    return versions


def duplicate_id_error(*, source: str, index: int, version_id: int, earlier: int) -> PayloadError:
    return PayloadError(f"{source}: versions[{index}] (id {version_id}) repeats the id of versions[{earlier}]")


def parse_created(value: str) -> datetime:
    """The API sends "2023-03-21 20:45:48" (UTC, no zone) or ISO 8601 with Z."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        try:  # parsing again with a zone is ~4x faster than .replace(tzinfo=...)
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # a date without a time
            return parsed.replace(tzinfo=timezone.utc)
    return parsed if parsed.tzinfo is timezone.utc else parsed.astimezone(timezone.utc)


def _explain(item: dict, where: str) -> PayloadError | None:
    """The message for an item the Item struct refused: the first bad field, in column order."""
    id_ = item.get("id")
    if "id" not in item:
        return PayloadError(f'{where} has no "id"')
    if type(id_) is not int:
        return PayloadError(f'{where}: field "id" is a JSON {_json_type(id_)}, not an integer: {id_!r}')
    if not -INT32 <= id_ < INT32:
        return PayloadError(f'{where}: field "id" is out of range: {id_}')
    where = f"{where} (id {id_})"
    for key in ("name", "description", "ref", "leanHash", "leanCloudHash"):
        value = item.get(key)
        if value is not None and type(value) is not str:
            return PayloadError(
                f'{where}: field "{key}" is a JSON {_json_type(value)}, not a string: {_short(value)}')
    public = item.get("public")
    if public is not None and type(public) is not bool and not (type(public) is int and public in (0, 1)):
        return PayloadError(f'{where}: field "public" is not a boolean or 0/1: {_short(public)}')
    created = item.get("created")
    if created is not None and type(created) is not str:
        return PayloadError(
            f'{where}: field "created" is a JSON {_json_type(created)}, not a timestamp string: {_short(created)}')
    return None


def _holds_nul(value: Any) -> bool:
    """Whether any string (key or value) at any depth holds a NUL; a loop, as
    msgspec decodes deeper than Python's recursion limit allows walking."""
    pending = [value]
    while pending:
        value = pending.pop()
        if type(value) is str:
            if "\x00" in value:
                return True
        elif type(value) is dict:
            pending.extend(value.keys())
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
    return False


def _without_bom(data):
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    if isinstance(data, bytes) and data[:3] == BOM:
        return data[3:]
    return data  # a msgspec.Raw slice: inside the body, after any BOM


def _not_json(data, source: str) -> PayloadError:
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    head = " ".join(text[:40].split())
    kind = "HTML" if head.startswith("<") else "not JSON"
    return PayloadError(f"the response from {source} is {kind} (it starts with {head!r})")


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "values nested too deeply"
    text = str(exc)
    return text[:1].lower() + text[1:]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(_head(value, SHORT))  # the messages' established spelling ("a", "b")
    return text if len(text) <= SHORT else text[:SHORT - 3] + "..."


SHORT = 60


def _head(value: Any, depth: int) -> Any:
    """As much of a value as its first ``depth`` characters of JSON can show: every level and
    element adds one at least. json.dumps of a deeply nested value would otherwise need a
    stack as deep as the value (and a run decodes while it writes, deep in the stack)."""
    if depth == 0:
        return None
    if type(value) is list:
        return [_head(v, depth - 1) for v in value[:depth]]
    if type(value) is dict:
        return {k: _head(v, depth - 1) for k, v in islice(value.items(), depth)}
    return value
