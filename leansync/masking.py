"""The one place secrets are masked, for every message, log line, stored text and metric.

Secrets are of two kinds:
- credentials that travel inside a URL or DSN (a database password in the
  user info or as ``password=``, a gateway's basic auth in the API URL, a
  token in a query parameter): `mask` finds them by their shape;
- secrets known by value (the API token, notification URLs, the webhook
  secret): `register` them once, and `mask` replaces them wherever they
  appear, whole or URL-encoded.
"""

import logging
import re
from urllib.parse import quote, quote_plus

MASK = "***"

# scheme://user:password@  (the user stays: it says which account, and is not a secret)
_USERINFO_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@?#]*):([^/\s@]*)@")
# password=... in a query string or a libpq keyword DSN ('quoted' values included)
_SECRET_PARAM = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?token|auth|signature)"
    r"(\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s#'\"]*)"
)

_registered: set[str] = set()
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def register(*secrets: str | None) -> None:
    """Mask these values, wherever they appear, for the rest of the process."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            # surrogatepass: a value that is not UTF-8 text (undecodable bytes from the environment) is masked too
            _registered.update({secret, quote(secret, safe="", errors="surrogatepass"),
                                quote_plus(secret, errors="surrogatepass")})


def mask(text: str) -> str:
    """``text`` with every credential it holds replaced by ``***``."""
    if not text:
        return text
    for secret in sorted(_registered, key=len, reverse=True):  # longest first: a secret may contain another
        text = text.replace(secret, MASK)
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


class MaskingFormatter(logging.Formatter):
    """A log formatter whose lines (tracebacks included) pass through `mask`.

    leansync puts it on the handlers it installs, so every logger's records are
    masked, third-party ones (urllib3, SQLAlchemy, psycopg) included.
    """

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))
