"""Parse and validate a `lean/versions/read` response into typed versions.

Everything the API sends is checked here, before anything is written, so a
bad answer fails the run with one sentence that names the item and field.
An object identical to the one already stored was checked when it was
stored, and is not checked again (validate_document's ``unchanged``).
"""

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

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
INT32 = 2**31  # lean_version.id is a 32-bit integer on PostgreSQL
_TEXT = frozenset({str, type(None)})  # what a string field may hold


class ValidatedItem(NamedTuple):
    """One version as the API lists it.

    ``fields`` holds the seven modelled fields in column order (see
    FIELD_KEYS); ``raw`` is the whole JSON object, unknown keys included.
    """

    id: int
    fields: tuple | None  # None only for a version trusted as unchanged (see validate_document)
    raw: dict | None  # None only for a KnownItem (see parse_json)
    text: str | None = None  # the object's JSON text exactly as sent, when known


class KnownItem(NamedTuple):
    """An item of the versions array whose text is exactly a stored version's raw
    text: recognised by parse_json without being parsed again (see ``known``)."""

    id: int
    text: str


class ResponseDocument(dict):
    """A parsed response that also keeps the JSON text of each item of its
    "versions" array exactly as sent: stored as `raw` and compared with the
    stored text, it spares encoding every object again on every run."""

    item_texts: list[str] | None = None


def parse_json(data: str | bytes, *, source: str, known: Mapping[str, int] | None = None) -> Any:
    """Parse a response body, with a clear message for HTML or garbage.

    ``known`` maps the raw texts of listed, stored versions to their ids: an
    item of "versions" that is exactly one of them becomes a KnownItem instead
    of being parsed (most of a run's items, most of its parsing time and
    memory).
    """
    text = data
    try:
        if isinstance(text, bytes):  # as json.loads decodes bytes (a UTF-8 BOM is fine)
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        try:
            return _parse_keeping_item_texts(text, _prefix_index(known or {}))
        except ValueError:  # not the usual shape, or not JSON: json's own parser decides
            return json.loads(text)
    except ValueError:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        head = " ".join(text[:40].split())
        kind = "HTML" if head.startswith("<") else "not JSON"
        raise PayloadError(f"the response from {source} is {kind} (it starts with {head!r})") from None


_decode = json.JSONDecoder().raw_decode
_skip_space = re.compile(r"[ \t\n\r]*").match  # JSON's whitespace
PREFIX = 48  # characters of an item that find the stored texts it may equal


def _prefix_index(known: Mapping[str, int]) -> dict[str, list[tuple[str, int]]]:
    index: dict[str, list[tuple[str, int]]] = {}
    for text, version_id in known.items():
        if len(text) >= PREFIX:  # a shorter one is cheap to parse anyway
            index.setdefault(text[:PREFIX], []).append((text, version_id))
    return index


def _parse_keeping_item_texts(text: str, known: dict[str, list[tuple[str, int]]]) -> ResponseDocument:
    """json.loads for a top-level object, keeping the text of each "versions" item.

    Each value is parsed by json's own scanner; only the top-level object and
    the versions array are walked here. Raises ValueError on anything else.
    """
    document = ResponseDocument()
    at = _skip_space(text, 0).end()
    if not text.startswith("{", at):
        raise ValueError("not an object")
    at = _skip_space(text, at + 1).end()
    closed = text.startswith("}", at)
    while not closed:
        key, at = _decode(text, at)
        at = _skip_space(text, at).end()
        if type(key) is not str or not text.startswith(":", at):
            raise ValueError("not a key")
        at = _skip_space(text, at + 1).end()
        if key == "versions":
            document.item_texts = None
            if text.startswith("[", at):
                value, document.item_texts, at = _array_keeping_texts(text, at, known)
            else:
                value, at = _decode(text, at)
        else:
            value, at = _decode(text, at)
        document[key] = value
        at = _skip_space(text, at).end()
        closed = text.startswith("}", at)
        if not closed:
            if not text.startswith(",", at):
                raise ValueError("expected , or }")
            at = _skip_space(text, at + 1).end()
    if _skip_space(text, at + 1).end() != len(text):
        raise ValueError("extra data")
    return document


def _array_keeping_texts(text: str, at: int, known: dict[str, list[tuple[str, int]]]) -> tuple[list, list[str], int]:
    items: list = []
    texts: list[str] = []
    at = _skip_space(text, at + 1).end()
    if text.startswith("]", at):
        return items, texts, at + 1
    while True:
        for candidate, version_id in known.get(text[at:at + PREFIX], ()):
            if text.startswith(candidate, at):  # a complete object, exactly as stored
                items.append(KnownItem(version_id, candidate))
                texts.append(candidate)
                end = at + len(candidate)
                break
        else:
            item, end = _decode(text, at)
            items.append(item)
            texts.append(text[at:end])
        at = _skip_space(text, end).end()
        if text.startswith("]", at):
            return items, texts, at + 1
        if not text.startswith(",", at):
            raise ValueError("expected , or ]")
        at = _skip_space(text, at + 1).end()


def api_errors(document: Any) -> list[str] | None:
    """The API's own error messages if it reported `success: false`, else None."""
    if isinstance(document, dict) and document.get("success") is False:
        errors = document.get("errors")
        if isinstance(errors, list):
            return [str(e) for e in errors]
        return [str(errors)] if errors else []
    return None


def parse_created(value: str) -> datetime:
    """The API sends "2023-03-21 20:45:48" (UTC, no zone) or ISO 8601 with Z."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        try:  # parsing again with a zone is ~4x faster than .replace(tzinfo=...)
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # a date without a time
            return parsed.replace(tzinfo=timezone.utc)
    return parsed if parsed.tzinfo is timezone.utc else parsed.astimezone(timezone.utc)


def validate_document(
    document: Any, *, source: str, unchanged: Mapping[int, Any] | None = None
) -> list[ValidatedItem]:
    """Turn a parsed response into versions, or raise PayloadError.

    ``unchanged`` maps the ids of listed, stored versions to their stored raw
    (JSON text, or the decoded object). An item identical to its stored raw
    (or a KnownItem from parse_json) was validated when it was stored: it is
    passed through with ``fields`` None, which the diff never reads for an
    unchanged version (nor ``raw``, None for a KnownItem).
    """
    items = _versions_list(document, source)
    texts = getattr(document, "item_texts", None) or [None] * len(items)
    unchanged = unchanged or {}

    versions: list[Version] = []
    first_index: dict[int, int] = {}
    for index, (item, text) in enumerate(zip(items, texts)):
        stored = unchanged.get(item.get("id")) if type(item) is dict else None
        if type(item) is KnownItem:  # parse_json matched it with a stored text
            version = ValidatedItem(item.id, None, None, item.text)
        elif stored is not None and stored == (text if type(stored) is str else item):
            version = ValidatedItem(item["id"], None, item, text)
        else:
            version = _validate_item(item, index, source, text)
        earlier = first_index.setdefault(version.id, index)
        if earlier != index:
            raise duplicate_id_error(source=source, index=index, version_id=version.id, earlier=earlier)
        versions.append(version)
    return versions


def _versions_list(document: Any, source: str) -> list:
    if not isinstance(document, dict):
        raise PayloadError(
            f"the response from {source} is a JSON {_json_type(document)}, not an object"
        )
    errors = api_errors(document)
    if errors is not None:
        shown = "; ".join(errors) if errors else "no error message"
        raise PayloadError(f"QuantConnect reported success: false from {source}: {shown}")
    if "versions" not in document:
        raise PayloadError(f'the response from {source} has no "versions" list')
    items = document["versions"]
    if not isinstance(items, list):
        raise PayloadError(
            f'the response from {source} has "versions" as a JSON {_json_type(items)}, not a list'
        )
    return items


def _validate_item(item: Any, index: int, source: str, text: str | None = None) -> ValidatedItem:
    # The hot path of a sync (once per version): messages are built only on error.
    if type(item) is not dict:
        raise PayloadError(f"{source}: versions[{index}] is a JSON {_json_type(item)}, not an object")
    id_ = item.get("id")
    if type(id_) is not int or not -INT32 <= id_ < INT32:  # bool is a subclass of int: rejected too
        raise PayloadError(_id_problem(item, id_, f"{source}: versions[{index}]"))

    get = item.get
    name, description, ref = get("name"), get("description"), get("ref")
    lean_hash, cloud_hash = get("leanHash"), get("leanCloudHash")
    public, created = get("public"), get("created")
    if not (type(name) in _TEXT and type(description) in _TEXT and type(ref) in _TEXT
            and type(lean_hash) in _TEXT and type(cloud_hash) in _TEXT):
        for key in ("name", "description", "ref", "leanHash", "leanCloudHash"):
            value = item.get(key)
            if type(value) not in _TEXT:
                raise PayloadError(
                    f'{source}: versions[{index}] (id {id_}): field "{key}" is a JSON {_json_type(value)}, '
                    f"not a string: {_short(value)}"
                )

    if public is not None and type(public) is not bool:
        if type(public) is int and public in (0, 1):
            public = bool(public)
        else:
            raise PayloadError(
                f'{source}: versions[{index}] (id {id_}): field "public" is not a boolean or 0/1: {_short(public)}'
            )

    if created is not None:
        if type(created) is not str:
            raise PayloadError(
                f'{source}: versions[{index}] (id {id_}): field "created" is a JSON {_json_type(created)}, '
                f"not a timestamp string: {_short(created)}"
            )
        try:
            created = parse_created(created)
        except ValueError:
            raise PayloadError(
                f'{source}: versions[{index}] (id {id_}): field "created" is not a valid timestamp: {created!r}'
            ) from None

    # PostgreSQL can store no NUL character (\u0000), in text or jsonb: refuse it
    # on every backend, so both keep the same history. The text test is cheap.
    if ("\\u0000" in text if text is not None else True) and _holds_nul(item):
        raise PayloadError(
            f"{source}: versions[{index}] (id {id_}): a string holds a NUL character (\\u0000), "
            "which the database cannot store"
        )
    return ValidatedItem(id_, (name, description, ref, lean_hash, cloud_hash, public, created), item, text)


def _holds_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if type(value) is dict:
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if type(value) is list:
        return any(_holds_nul(v) for v in value)
    return False


def _id_problem(item: dict, id_: Any, where: str) -> str:
    if "id" not in item:
        return f'{where} has no "id"'
    if type(id_) is not int:
        return f'{where}: field "id" is a JSON {_json_type(id_)}, not an integer: {id_!r}'
    return f'{where}: field "id" is out of range: {id_}'


def encode_raw(raw: dict) -> str:
    return json.dumps(raw)


def raw_text(version: ValidatedItem) -> str:
    """The JSON text a version's raw object is stored as: as sent, when known."""
    return version.text if version.text is not None else encode_raw(version.raw)


def fields_of(raw: dict) -> tuple:
    """The seven modelled fields of a raw object that was validated when stored."""
    return _validate_item(raw, 0, "stored raw").fields


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
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- The issue 9 contract (docs: PAYLOAD_CONTRACT), a temporary adapter over the
# code above until the msgspec rewrite replaces this module. ---------------------

MODELLED_KEYS: frozenset[str] = frozenset({"id", *(key for _, key in FIELD_KEYS)})


class Version(NamedTuple):
    """One decoded, validated version (see decode_version)."""

    id: int
    fields: tuple  # the seven modelled fields in models.API_FIELDS order
    extra: dict | None  # the object's other keys, as decoded; None when there are none
    raw: str  # the object's JSON text, to store in lean_version.raw
    digest: str  # digest(item bytes)


def split_items(body: bytes, *, source: str) -> list[bytes]:
    """The items of the "versions" array, each as its JSON bytes, in order."""
    try:  # the usual shape, fast; anything else takes the path with today's messages
        top = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
        if "success" not in top or msgspec.json.decode(top["success"]) is not False:
            return msgspec.json.decode(top["versions"], type=list[msgspec.Raw])
    except (msgspec.DecodeError, KeyError):
        pass
    document = parse_json(body, source=source)
    items = _versions_list(document, source)
    texts = getattr(document, "item_texts", None) or [json.dumps(item) for item in items]
    return [text.encode("utf-8", "surrogatepass") for text in texts]


def digest(item: bytes) -> str:
    """Hex BLAKE2b-128 of an item's bytes as sent."""
    return hashlib.blake2b(item, digest_size=16).hexdigest()


def decode_version(item: bytes, *, index: int, source: str) -> Version:
    text = bytes(item).decode("utf-8", "surrogatepass")
    try:
        value = msgspec.json.decode(item)
    except msgspec.DecodeError:
        value = json.loads(text)
    checked = _validate_item(value, index, source, text)
    extra = {key: v for key, v in value.items() if key not in MODELLED_KEYS} or None
    return Version(checked.id, checked.fields, extra, text, digest(item))


def duplicate_id_error(*, source: str, index: int, version_id: int, earlier: int) -> PayloadError:
    return PayloadError(f"{source}: versions[{index}] (id {version_id}) repeats the id of versions[{earlier}]")
