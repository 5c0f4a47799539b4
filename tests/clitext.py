"""What the command line prints, read back by the tests."""


def error_line(stderr: str) -> str:
    """The one line on stderr, an expected error (not 'unexpected error'), no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("leansync: error: "), stderr
    assert "unexpected error" not in lines[0] and "Traceback" not in stderr
    return lines[0].removeprefix("leansync: error: ")
