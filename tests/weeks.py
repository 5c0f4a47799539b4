"""A history of several weeks, made by backfilling saved answers with `sync --from-file --observed-at`.

Every other day from START for WEEKS weeks, a saved answer of the real tags:
the 30 oldest of the chosen tags are listed from the start, then one or two
more are released on most run days (every third one private), a description
is retagged now and then, a version is withdrawn and later listed again. One
saved answer is broken (that backfill fails and is recorded), and the last
run is an ordinary one (no --observed-at), so the runs chart has a real
duration as well as backfills; the version it adds is named MARKUP_NAME.
"""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from click.testing import CliRunner

from leansync.cli import cli
from samples import response

START = datetime(2026, 9, 7, 6, 0, tzinfo=timezone.utc)  # a Monday
WEEKS = 7
STEP = timedelta(days=2)
MARKUP_NAME = 'v2.5 <i>rc</i> & "beta"'


def backfill_weeks(run, write_response, tag_versions, tmp_path) -> list[datetime]:
    """Run the backfills through the CLI; returns the observed-at moments of the runs."""
    chosen = sorted(tag_versions[:90], key=lambda v: v["id"])
    versions = [dict(v) for v in chosen]
    for n, v in enumerate(versions[30:]):
        v["public"] = n % 3 != 2
    listed = versions[:30]
    pending = versions[30:]
    moments = []
    moment, day = START, 0
    while moment < START + timedelta(weeks=WEEKS):
        if day % 3 != 1 and pending:  # releases on most run days
            listed = listed + pending[: 1 + day % 2]
            pending = pending[1 + day % 2:]
        if day % 5 == 3:  # a retag
            listed = [dict(v) for v in listed]
            listed[day % len(listed)]["description"] += f" (retagged {day})"
        shown = listed
        if day % 7 == 4:  # withdrawn for one run, then back
            shown = [v for v in listed if v["id"] != listed[5 + day % 4]["id"]]
        if day == 9:
            bad = tmp_path / "broken.json"
            bad.write_text('{"versions": [')
            failed = run("sync", "-q", "--from-file", bad, "--observed-at", moment.isoformat())
            assert failed.exit_code == 1, failed.output
        else:
            result = run("sync", "-q", "--from-file", write_response(shown), "--observed-at", moment.isoformat())
            assert result.exit_code == 0, result.output
        moments.append(moment)
        moment += STEP
        day += 1
    newest = dict(pending[0], name=MARKUP_NAME)  # text from the API that looks like markup
    result = run("sync", "-q", "--from-file", write_response([*listed, newest]))  # an ordinary run, now
    assert result.exit_code == 0, result.output
    return moments


def build_weeks(url: str, folder: Path, tag_versions: list[dict]) -> list[datetime]:
    """backfill_weeks into the database at ``url``, its saved answers in ``folder`` (for conftest's database_copy)."""
    saved = iter(range(10**6))

    def run(*args):
        return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)

    def write_response(versions):
        path = folder / f"response-{next(saved)}.json"
        path.write_text(json.dumps(response(versions)))
        return path

    return backfill_weeks(run, write_response, tag_versions, folder)
