"""`leansync feed` and `sync --feed-file`: an Atom 1.0 feed of the change events.

Parsed by feedparser, a real feed reader's library, over several weeks of
backfilled history (tests/weeks.py).
"""

import json
import stat
import subprocess
from datetime import datetime, timezone

import feedparser
import pytest
from freezegun import freeze_time

from faults import LEANSYNC, error_sentence, leansync
from weeks import build_weeks

ALL = "1000000"


def parse(result):
    assert result.exit_code == 0, result.output
    feed = feedparser.parse(result.stdout_bytes)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    return feed


def changes(run, *args):
    result = run("changes", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def parsed_time(entry) -> datetime:
    return datetime.fromisoformat(entry.updated.replace("Z", "+00:00")).astimezone(timezone.utc)


def event_time(row) -> datetime:
    return datetime.fromisoformat(row["event_time"].replace("Z", "+00:00"))


@pytest.fixture
def weeks(database_copy, tag_versions):
    """The test's database holds the backfilled weeks (a copy of a template); the runs' observed-at moments."""
    return database_copy("weeks", lambda url, folder: build_weeks(url, folder, tag_versions))


def test_entries_are_the_events_changes_lists_for_the_same_window(run, weeks):
    since = weeks[6].isoformat()
    feed = parse(run("feed", "--since", since, "--limit", ALL))
    rows = changes(run, "--since", since)
    entries = feed.entries[::-1]  # the feed is newest first
    assert len(entries) == len(rows) > 20
    assert {row["event"] for row in rows} == {"new_version", "changed", "removed", "restored", "new_hash"}
    for entry, row in zip(entries, rows):
        assert parsed_time(entry) == event_time(row)
        assert entry.id.split("/")[1] == row["event"]  # tag:leansync,2026:event/<kind>/...
        assert str(row["version_id"]) in entry.title
        assert [link.href for link in entry.get("links", [])] == ([row["commit_url"]] if row["commit_url"] else [])
    assert len({entry.id for entry in entries}) == len(entries)
    titles = {row["event"]: entry.title for entry, row in zip(entries, rows)}
    assert titles["new_version"].startswith("LEAN ") and titles["new_version"].endswith(
        ("added (public, master)", "added (private, master)"))
    assert " removed (" in titles["removed"] and " restored (" in titles["restored"]


def test_changed_entries_say_old_and_new(run, weeks):
    feed = parse(run("feed", "--limit", ALL))
    rows = [row for row in changes(run, "--since", "2026-01-01") if row["event"] == "changed"]
    by_time = {(parsed_time(e), e.title.split()[1]): e for e in feed.entries}
    assert rows
    for row in rows:
        entry = by_time[(event_time(row), str(row["version_id"]))]
        assert entry.title == f"LEAN {row['version_id']} changed: description (public, master)" or \
            entry.title == f"LEAN {row['version_id']} changed: description (private, master)"
        pair = row["changes"]["description"]
        assert f"description: {pair['old']} → {pair['new']}" in entry.content[0].value


def test_limit_keeps_the_newest_events_and_defaults_to_50(run, weeks):
    rows = changes(run, "--since", "2026-01-01")
    default = parse(run("feed"))
    assert len(default.entries) == 50 < len(rows)
    assert [parsed_time(e) for e in default.entries] == [event_time(r) for r in rows[-50:]][::-1]
    three = parse(run("feed", "--limit", "3"))
    assert [e.id for e in three.entries] == [e.id for e in default.entries[:3]]


def test_ids_and_the_document_do_not_depend_on_when_it_is_built(run, weeks, write_response, tag_versions):
    with freeze_time("2027-01-01"):
        first = run("feed", "--limit", ALL).stdout
    with freeze_time("2027-06-01"):
        again = run("feed", "--limit", ALL).stdout
    assert first == again  # nothing new: the same document, byte for byte
    before = {e.id: (e.title, e.updated) for e in feedparser.parse(first).entries}
    more = [dict(v) for v in sorted(tag_versions[:92], key=lambda v: v["id"])]  # the next releases
    assert run("sync", "-q", "--from-file", write_response(more)).exit_code == 0
    after = {e.id: (e.title, e.updated) for e in parse(run("feed", "--limit", ALL)).entries}
    assert set(after) > set(before)
    assert {i: after[i] for i in before} == before  # every entry still in it kept its id


def test_links_use_the_mirror_and_never_the_cloud_hash(run, weeks):
    mirror = "https://git.example.com/mirror/Lean"
    feed = parse(run("feed", "--limit", ALL, env={"LEANSYNC_LEAN_REPO_URL": mirror}))
    links = [link.href for entry in feed.entries for link in entry.get("links", [])]
    assert links and all(link.startswith(f"{mirror}/commit/") for link in links)
    cloud = [e for e in feed.entries if e.title.startswith("New leanCloudHash")]
    assert cloud and not any(e.get("links") for e in cloud)
    cloud_hashes = {e.id.rsplit("/", 1)[1] for e in cloud}
    assert not [link for link in links if link.rsplit("/", 1)[1] in cloud_hashes]


def test_an_empty_history_gives_an_empty_valid_feed(run, database_url):
    assert run("sync", "--from-file", "-", input='{"versions": [], "success": true, "errors": []}',
               ).exit_code == 0
    feed = parse(run("feed"))
    assert feed.entries == [] and feed.feed.title == "LEAN engine versions"


def test_feed_file_is_written_atomically_with_a_plain_files_mode_and_kept_on_failure(
        database_url, write_response, tag_versions, tmp_path):
    published = tmp_path / "www"
    published.mkdir()
    path = published / "lean-versions.atom"
    umask = 'umask 027; exec "$@"'  # 0640: neither the default 0644 nor a temporary file's 0600

    def sync(*args):  # the installed command, under that umask
        return subprocess.run(["/bin/sh", "-c", umask, "sh", str(LEANSYNC), "--database-url", database_url,
                               "sync", "-q", *map(str, args), "--feed-file", str(path)],
                              capture_output=True, text=True, timeout=120)

    result = sync("--from-file", write_response(tag_versions[5:15]))  # 10 versions
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    old = path.read_bytes()
    first = tag_versions[5:15]
    hashes = {v["leanHash"] for v in first} | {v["leanCloudHash"] for v in first}
    assert not feedparser.parse(old).bozo and len(feedparser.parse(old).entries) == 10 + len(hashes)
    reader = path.open("rb")  # a web server sending the file while the next run replaces it
    inode = path.stat().st_ino
    result = sync("--from-file", write_response(tag_versions[:15]))
    assert result.returncode == 0, result.stderr
    assert path.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert reader.read() == old  # the reader still gets the whole old file
    reader.close()
    new = path.read_bytes()
    assert len(feedparser.parse(new).entries) > 10 + len(hashes)
    assert sorted(p.name for p in published.iterdir()) == ["lean-versions.atom"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    broken = tmp_path / "broken.json"
    broken.write_text('{"versions": [')
    failed = sync("--from-file", broken)
    assert failed.returncode == 1
    assert path.read_bytes() == new  # a failed run leaves the previous file
    assert sorted(p.name for p in published.iterdir()) == ["lean-versions.atom"]


def test_feed_file_usage_errors(run, database_url, write_response, ten, tmp_path):
    result = run("sync", "--from-file", write_response(ten), "--dry-run", "--feed-file", tmp_path / "f.atom")
    assert result.exit_code == 2
    assert "--feed-file and --report-file cannot be combined with --dry-run" in result.stderr
    result = leansync("sync", "--from-file", write_response(ten), "--feed-file", tmp_path / "no" / "f.atom",
                      url=database_url)
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


def test_feed_of_a_missing_database_is_a_usage_error(tmp_path):
    result = leansync("feed", url=f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2
    assert error_sentence(result)
