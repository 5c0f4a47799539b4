"""Where leansync finds its database, the API and the credentials."""

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from leansync.errors import ConfigError
from leansync.masking import register

DEFAULT_API_URL = "https://www.quantconnect.com/api/v2/"
ENV_DATABASE_URL = "LEANSYNC_DATABASE_URL"
ENV_API_URL = "QUANTCONNECT_API_URL"
ENV_USER_ID = "QUANTCONNECT_USER_ID"
ENV_API_TOKEN = "QUANTCONNECT_API_TOKEN"


def default_database_url() -> str:
    """A SQLite file in the user's data directory, so cron, a shell in any
    folder and a reporting tool all find the same history."""
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('leansync')) / 'leansync.db'}"


def resolve_database_url(database_url: str | None) -> str:
    """The URL given, else $LEANSYNC_DATABASE_URL, else the default SQLite file."""
    return database_url or os.environ.get(ENV_DATABASE_URL) or default_database_url()


def lean_credentials_path() -> Path:
    """The file the Lean CLI writes on `lean login`."""
    return Path.home() / ".lean" / "credentials"


@dataclass(frozen=True)
class Credentials:
    user_id: str
    api_token: str = field(repr=False)  # never shown, logged or stored
    source: str = ""  # where they were read from, to name in error messages
    warnings: tuple[str, ...] = ()


MISSING_CREDENTIALS = (
    f"no QuantConnect credentials: set {ENV_USER_ID} and {ENV_API_TOKEN}, "
    "or log in with the Lean CLI (`lean login`) to create ~/.lean/credentials"
)


def load_credentials(*, user_id: str | None = None, environ=os.environ) -> Credentials:
    """Environment first, then the Lean CLI's credentials file.

    ``user_id`` (the --user-id option) overrides the user id from either place.
    The token is deliberately never taken from the command line: it would
    show in `ps`. It is registered with leansync.masking as soon as it is read.
    Credentials that cannot be read or are not text are a ConfigError that
    never quotes them.
    """
    env_token = environ.get(ENV_API_TOKEN)
    if env_token:
        register(env_token)
        env_user = user_id or environ.get(ENV_USER_ID)
        if not env_user:
            raise ConfigError(
                f"{ENV_API_TOKEN} is set but the user id is missing: "
                f"set {ENV_USER_ID} or pass --user-id"
            )
        return Credentials(
            user_id=_text(env_user, "--user-id" if user_id else ENV_USER_ID),
            api_token=_text(env_token, ENV_API_TOKEN),
            source=f"the environment ({ENV_USER_ID}, {ENV_API_TOKEN})",
        )

    path = lean_credentials_path()
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(MISSING_CREDENTIALS) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    data = _decode_json(raw, path)
    file_user = data.get("user-id") if isinstance(data, dict) else None
    token = data.get("api-token") if isinstance(data, dict) else None
    if isinstance(token, str):
        register(token)
    if not token or not (user_id or file_user):
        raise ConfigError(f'{path} lacks "user-id" or "api-token"; run `lean login` again')

    warnings = ()
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        # lean-cli itself writes the file 0644: one line, and the CLI drops it under -q.
        warnings = (f"{path} is readable by other users; fix it with: chmod 600 {path}",)
    return Credentials(
        user_id=_text(user_id, "--user-id") if user_id else _text(file_user, f'"user-id" in {path}'),
        api_token=_text(token, f'"api-token" in {path}'),
        source=str(path),
        warnings=warnings,
    )


def _decode_json(raw: bytes, path: Path):
    """The file's JSON, in whatever encoding an editor saved it.

    json.loads detects UTF-8 (with or without a BOM), UTF-16 and UTF-32 (as
    Windows Notepad saves "Unicode"); bytes that are none of these are read
    as Latin-1 (Notepad's "ANSI"). Never echoes the content: it holds the token.
    """
    try:
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            return json.loads(raw.decode("latin-1"))
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON in UTF-8, UTF-16, UTF-32 or Latin-1; "
                          "run `lean login` again") from None


def _text(value, where: str) -> str:
    """A user id or token as text that can be sent (UTF-8), never quoting it."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the environment or the command line, a lone \ud800
        raise ConfigError(f"the QuantConnect credentials in {where} are not valid UTF-8 text; "
                          "set them again (`lean login`, or the environment variables)") from None
    return text
