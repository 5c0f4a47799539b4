"""Print rows as an aligned table, JSON or CSV.

JSON and CSV are the export path: every column, full values, timestamps as
ISO-8601 UTC (`2026-03-01T09:00:00Z`, microseconds only when there are
some), booleans as true/false. JSON is an array of objects keyed by column
name; CSV has a header row and leaves NULL empty. The table is for people:
a chosen subset of columns, aligned, hashes in full, and safe to print: the
API's text reaches a terminal or a cron mail with its control characters
escaped (see ``printable``), so it can neither send escape sequences nor
forge lines. JSON and CSV carry the exact value.
"""

import csv
import io
import json
import re
from collections.abc import Callable, Sequence

import click

from leansync.timespec import utc_text_values

FORMATS = ("table", "json", "csv")
TABLE_TEXT_WIDTH = 60  # long free text (descriptions, errors) is shortened in tables only

# C0 controls, DEL, C1 controls (U+0080-U+009F, which include the 8-bit CSI
# U+009B) and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPE_OR_CHAR = re.compile(r"\\(?:[tnr]|x[0-9a-f]{2}|u[0-9a-f]{4})|.", re.S)
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    """``text`` with every control character written as Python writes it in a
    string literal (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\x9b``, ``\\u2028``),
    so text from the API can be printed to a terminal or mailed by cron."""
    return _CONTROL.sub(_escape, text)


def format_option(func):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="table for people; json (array of objects) or csv (header row) to export.")(func)


def text_value(value) -> str:
    """A cell as text: the same spelling in CSV and tables; objects as JSON text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = utc_text_values(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def to_json(rows: Sequence[dict], columns: Sequence[str]) -> str:
    document = [{name: utc_text_values(row[name]) for name in columns} for row in rows]
    return json.dumps(document, indent=2, ensure_ascii=False)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([text_value(row[name]) for name in columns])
    return buffer.getvalue().rstrip("\n")


def one_line(text: str) -> str:
    """Printable, on one line: control characters escaped, runs of spaces as one."""
    return " ".join(printable(text).split())


def shorten(text: str, width: int = TABLE_TEXT_WIDTH) -> str:
    """One line of at most ``width`` characters; an escape is never cut in two."""
    text = one_line(text)
    if len(text) <= width:
        return text
    kept = ""
    for token in _ESCAPE_OR_CHAR.findall(text):
        if len(kept) + len(token) > width - 1:
            break
        kept += token
    return kept + "…"


def shortened(column: str) -> Callable[[dict], str]:
    """A table cell for long free text: the column's value, shortened."""
    return lambda row: shorten(text_value(row[column]))


def to_table(rows: Sequence[dict], columns: Sequence[str],
             cells: dict[str, Callable[[dict], str]] | None = None) -> str:
    """Aligned columns; ``cells`` overrides how a column's cell is written. Every cell is printable."""
    cells = cells or {}
    body = [[printable(cells[name](row) if name in cells else text_value(row[name])) for name in columns]
            for row in rows]
    widths = [max([len(name), *(len(line[i]) for line in body)]) for i, name in enumerate(columns)]
    lines = []
    for line in [list(columns), *body]:
        padded = [cell.ljust(width) for cell, width in zip(line, widths)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def emit(rows: Sequence[dict], columns: Sequence[str], fmt: str, *, table_columns: Sequence[str] | None = None,
         cells: dict[str, Callable[[dict], str]] | None = None, quiet: bool = False) -> None:
    """Print the rows; ``quiet`` (-q) prints nothing at all when there are none, in every format."""
    if quiet and not rows:
        return
    if fmt == "json":
        click.echo(to_json(rows, columns))
    elif fmt == "csv":
        click.echo(to_csv(rows, columns))
    else:
        click.echo(to_table(rows, table_columns or columns, cells))


def describe_changes(changes: dict | None) -> str:
    """`public: true → false; lean_hash: 692bae… → f9cad3…` (hashes in full).

    An other key that was added or removed is absent on one side.
    """
    if not changes:
        return ""
    parts = []
    for name, pair in changes.items():
        old, new = (("null" if pair[k] is None else text_value(pair[k])) if k in pair else "(absent)"
                    for k in ("old", "new"))
        if name == "description":
            old, new = shorten(old, 30), shorten(new, 30)
        parts.append(f"{name}: {old} → {new}")
    return "; ".join(parts)
