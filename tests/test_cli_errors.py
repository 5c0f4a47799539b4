"""How the command line ends when things go wrong outside leansync's own logic."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"
LEANSYNC = str(Path(sys.executable).parent / "leansync")


def test_a_reader_that_leaves_early_gets_no_error_message(tmp_path):
    """`leansync sync --dry-run | head -1`: the closed pipe is not reported as an error."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    reader = subprocess.Popen([LEANSYNC, "--database-url", url, "sync", "--dry-run", "--from-file", str(EXAMPLE)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # the reader leaves while thousands of lines are still to come
    stderr = reader.stderr.read().decode()
    reader.stderr.close()
    reader.wait(timeout=60)
    assert reader.returncode == 1
    assert stderr == ""
