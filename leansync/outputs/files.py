"""Publishing a file for a web server or a browser: atomically, with a plain file's mode.

A file that cannot be written is a local mistake: a ConfigError (exit 2).
"""

import os
import tempfile
from pathlib import Path

from leansync.errors import ConfigError


def _plain_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask (a temporary file would get 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: Path, data: bytes, *, what: str) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    A reader (nginx, a feed reader, a browser) sees the old file or the new
    one, never half of one; if anything fails the old file stays as it was.
    ``what`` names the file in the error ("the feed file").
    """
    path = Path(path)
    try:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, _plain_mode())
        os.replace(handle.name, path)
    except OSError as exc:
        try:
            os.unlink(handle.name)
        except OSError:
            pass
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
