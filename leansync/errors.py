"""Errors the command line turns into one sentence on stderr and an exit code.

The exit codes are part of the contract that cron wrappers and monitors use:
0 success, 1 the run failed, 2 usage or configuration error, 75 lock busy.
"""

from leansync.masking import mask

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL from sysexits.h: "try again later"


class LeansyncError(Exception):
    """An expected failure with a message fit to show a user.

    Its message is masked (leansync.masking): whoever prints, logs or stores
    it, from the command line or the Python API, never sees a credential.
    """

    exit_code = EXIT_FAILED

    def __init__(self, *args):
        super().__init__(*(mask(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(LeansyncError):
    """Bad configuration: missing credentials, a malformed URL, a missing database."""

    exit_code = EXIT_CONFIG


class SchemaError(ConfigError):
    """The database schema is newer than, or unknown to, this version of leansync."""


class LockTimeout(LeansyncError):
    """Another run held the lock for longer than --lock-timeout."""

    exit_code = EXIT_TEMPFAIL


class FetchError(LeansyncError):
    """The API could not be reached, or answered with an HTTP error."""


class AuthError(FetchError):
    """QuantConnect rejected the credentials."""


class PayloadError(LeansyncError):
    """The API response (or a saved response) is not what leansync expects."""


class GuardError(LeansyncError):
    """A safety check refused to apply the run (the mass-removal guard)."""


class DatabaseError(LeansyncError):
    """The database could not be opened or written."""


class LockLost(DatabaseError):
    """The run's PostgreSQL lock went with its session before the run committed: it wrote nothing."""
