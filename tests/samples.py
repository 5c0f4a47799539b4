"""Realistic `lean/versions/read` responses built from QuantConnect/Lean's tags.

Used for test fixtures, and to make the shipped sample
(examples/lean-versions-read.json: every tag, newest id first, one version
per line). The tag list (id, commit hash, commit time, subject) comes from
the public QuantConnect/Lean repository (Apache-2.0). Fields the tags do not
carry (name, ref, leanCloudHash) are made up in a fixed, plausible way.
"""

import csv
import hashlib
from pathlib import Path


def read_tags(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def cloud_hash(lean_hash: str) -> str:
    return hashlib.sha1(f"cloud:{lean_hash}".encode()).hexdigest()


def version_from_tag(tag: dict) -> dict:
    tag_id = int(tag["id"])
    return {
        "id": tag_id,
        "created": tag["committed_utc"],  # the API's own format: "2023-03-21 20:45:48", UTC
        "description": tag["subject"],
        "leanHash": tag["lean_hash"],
        "leanCloudHash": cloud_hash(tag["lean_hash"]),
        "name": f"v2.5.{tag_id}",
        "ref": "master",
        "public": True,
    }


def many_versions(tag_versions: list[dict], n: int) -> list[dict]:
    """The real tags, then synthetic ones (ids from 1,000,001, hashes of their own), n in all."""
    versions = list(tag_versions[:n])
    for synthetic_id in range(1_000_001, 1_000_001 + n - len(versions)):
        template = tag_versions[synthetic_id % len(tag_versions)]
        versions.append(version_from_tag({"id": str(synthetic_id), "committed_utc": template["created"],
                                          "lean_hash": hashlib.sha1(f"s:{synthetic_id}".encode()).hexdigest(),
                                          "subject": template["description"]}))
    return versions


def response(versions: list[dict]) -> dict:
    return {"versions": versions, "success": True, "errors": []}
