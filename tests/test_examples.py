"""The sample response shipped for the quick start is the tag list, as the API would send it."""

import json
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"


def test_the_sample_is_every_tag_newest_first(tag_versions):
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert document["success"] is True and document["errors"] == []
    assert document["versions"] == tag_versions
    assert len(document["versions"]) == 4289
