"""`sync --max-response-mb N` caps the answer (issue 11, item 2).

The body is read as it streams in and counted after decompression; past
the cap the read stops: exit 1, one sentence with the cap and how much had
arrived, a `failed` run, no data changed. A Content-Length above the cap is
refused before anything is read. The process's peak RSS stays under the
cap + 100 MB, measured on the installed command. The set-up sync and the
checks that are not about the process run in this process as `main()` runs
them (tests/main_in_process.py).
"""

import itertools
import subprocess
import zlib

import pytest

from faults import assert_failed_run, leansync_peak_rss, qc, synced  # noqa: F401 (fixtures)
from main_in_process import leansync_in_process
from qc_server import Reply

MIB = 1024 * 1024
CAP_MB = 16
RSS_BOUND = (CAP_MB + 100) * MIB


def in_process(*args, url: str, env: dict) -> subprocess.CompletedProcess:
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url, env=env)


def assert_too_large(result, database_url, before) -> str:
    return assert_failed_run(result, database_url, before, f"the size cap of {CAP_MB} MiB (--max-response-mb)")


def assert_cut_at_the_cap(result, peak: int, database_url, before) -> None:
    message = assert_too_large(result, database_url, before)
    arrived = float(message.split(": ")[-1].split(" MiB had arrived")[0])
    assert CAP_MB < arrived <= CAP_MB + 0.1, message  # one read (64 KiB) past the cap at most
    print(f"peak RSS {peak / MIB:.0f} MiB")
    assert peak < RSS_BOUND, f"peak RSS {peak / MIB:.0f} MiB"


def test_an_endless_body_is_cut_at_the_cap_in_bounded_memory(synced, qc, database_url, tmp_path):
    """4 GiB offered without a Content-Length; leansync reads just past 16 MiB and hangs up."""
    qc.reply(Reply(chunks=itertools.repeat(b" " * MIB, 4096)))
    result, peak = leansync_peak_rss("sync", "--max-response-mb", CAP_MB, url=database_url, env=qc.env(),
                                     workdir=tmp_path)
    assert_cut_at_the_cap(result, peak, database_url, synced)


@pytest.mark.sqlite_only
def test_a_small_gzip_body_expanding_past_the_cap_is_counted_decompressed(synced, qc, database_url, tmp_path):
    gzip = zlib.compressobj(9, wbits=31)  # 256 MiB of JSON, compressed piece by piece
    parts = [gzip.compress(b'{"versions": [')]
    parts += [gzip.compress(b" " * MIB) for _ in range(256)]
    compressed = b"".join([*parts, gzip.compress(b'], "success": true}'), gzip.flush()])
    assert len(compressed) < MIB  # well under the cap as sent
    qc.reply(Reply(body=compressed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}))
    result, peak = leansync_peak_rss("sync", "--max-response-mb", CAP_MB, url=database_url, env=qc.env(),
                                     workdir=tmp_path)
    assert_cut_at_the_cap(result, peak, database_url, synced)


@pytest.mark.sqlite_only
def test_a_content_length_above_the_cap_is_refused_before_reading(synced, qc, database_url):
    """The body would take longer than the deadline to arrive: a run that read it would say so instead."""
    qc.reply(Reply(body=b"{}" * 100, content_length=40 * MIB, trickle=1.0, trickle_headers=False))
    result = in_process("sync", "--max-response-mb", CAP_MB, "--deadline", "5", url=database_url, env=qc.env())
    message = assert_too_large(result, database_url, synced)
    assert "announced an answer of 40.0 MiB (Content-Length)" in message and "nothing was read" in message


@pytest.mark.sqlite_only
def test_an_answer_under_the_cap_is_synced(synced, qc, database_url, tag_versions):
    qc.versions = tag_versions[:30]
    result = in_process("sync", "--json", "--max-response-mb", "0.5", url=database_url, env=qc.env())
    assert result.returncode == 0, result.stderr
    assert '"inserted": 10' in result.stdout
