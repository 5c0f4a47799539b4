"""A disk that fills in the middle of the write transaction (issue 11, item 3).

Simulated with a file-size limit on the installed command (RLIMIT_FSIZE via
preexec_fn; Python ignores SIGXFSZ, so SQLite sees the failed write): the
run's 10,000 new versions cannot fit in the WAL the limit allows, while the
reads before them do. The run fails with one sentence naming the database,
saying it could not be written and suggesting to check the free space; the
file passes integrity_check, holds exactly the data it held before, and the
next run without the limit succeeds.
"""

import json
import resource
from pathlib import Path

import pytest

from dbstate import check_integrity, data_tables, runs
from faults import error_sentence, leansync
from samples import many_versions, response

pytestmark = pytest.mark.sqlite_only
NEW_VERSIONS = 10_000
# Room for the -shm file (32 KiB) and some WAL pages, not for 10,000 versions: the failed run is recorded.
ROOMY = 256 * 1024
# Not even room for the -shm file: nothing at all can be written, the one line is all there is.
TIGHT = 16 * 1024


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("limit", [ROOMY, TIGHT], ids=["roomy", "tight"])
def test_a_full_disk_mid_transaction_fails_cleanly_and_the_next_run_succeeds(database_url, tmp_path,
                                                                             tag_versions, limit):
    small = tmp_path / "small.json"
    small.write_text(json.dumps(response(tag_versions[:20])))
    big = tmp_path / "big.json"
    big.write_text(json.dumps(response(many_versions(tag_versions, NEW_VERSIONS + 20))))
    first = leansync("sync", "-q", "--from-file", small, url=database_url)
    assert first.returncode == 0, first.stderr
    before = data_tables(database_url)
    path = Path(database_url.removeprefix("sqlite:///"))
    assert path.stat().st_size < ROOMY  # the limit lets the file be read and the run start

    result = leansync("sync", "--from-file", big, url=database_url, preexec_fn=limit_file_size(limit))

    assert result.returncode == 1, result.stderr
    message = error_sentence(result)  # one line: also when the failed run could not be recorded
    assert message.startswith(f"could not write the database sqlite:///{path}"), message
    assert "space" in message
    check_integrity(database_url)
    assert data_tables(database_url) == before
    recorded = runs(database_url)
    if limit == ROOMY:
        assert [r["status"] for r in recorded] == ["success", "failed"] and recorded[-1]["error"] == message
    else:
        assert [r["status"] for r in recorded] == ["success"]

    again = leansync("sync", "--json", "--from-file", big, url=database_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["inserted"] == NEW_VERSIONS
    check_integrity(database_url)
