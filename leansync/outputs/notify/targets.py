"""The configured notification targets, each named by a label and known by a keyed hash.

Targets come from the environment and a file only, never from the command
line: their URLs carry credentials (Slack tokens, SMTP passwords).
- LEANSYNC_NOTIFY: Apprise URLs separated by whitespace or commas;
- LEANSYNC_NOTIFY_CONFIG or `sync --notify-config`: an Apprise configuration file;
- LEANSYNC_WEBHOOK_URL (and LEANSYNC_WEBHOOK_SECRET): leansync's own webhook.

Every URL, and every part of it Apprise treats as private, is registered
with leansync.masking as soon as it is read. Apprise is imported only when
an Apprise target is configured.
"""

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from leansync import masking
from leansync.errors import ConfigError

ENV_NOTIFY = "LEANSYNC_NOTIFY"
ENV_NOTIFY_CONFIG = "LEANSYNC_NOTIFY_CONFIG"
ENV_WEBHOOK_URL = "LEANSYNC_WEBHOOK_URL"
ENV_WEBHOOK_SECRET = "LEANSYNC_WEBHOOK_SECRET"

# The identity key. Fixed, not per database: the same URL is the same target
# in every database (a `db copy` keeps its pending rows deliverable), and a
# per-database key would be stored beside the hashes it protects. The URLs
# hashed carry their credentials, which is what makes the hash hard to invert.
TARGET_KEY = b"leansync notification target v1"

# A comma separates two URLs only when the next one starts: Apprise's own
# query values (mailto://...?to=a@x,b@x) keep theirs.
_SEPARATOR = re.compile(r"\s+|,\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
# The pieces a URL is made of, to tell which ones Apprise hides in its privacy form.
_PIECES = re.compile(r"[^/:@?&=#,\s]+")


@dataclass(frozen=True)
class Target:
    """One place to send notifications. ``url`` is a secret: never print or store it."""

    kind: str  # "apprise" or "webhook"
    label: str  # scheme://host[:port]
    key: str  # hex HMAC-SHA256 of the URL under TARGET_KEY
    url: str = field(repr=False)
    plugin: Any = field(default=None, repr=False, compare=False)  # the Apprise plugin instance
    secret: str | None = field(default=None, repr=False)  # the webhook's signing secret


def target_key(url: str) -> str:
    return hmac.new(TARGET_KEY, url.encode(), hashlib.sha256).hexdigest()


def label_of(url: str) -> str:
    """``scheme://host[:port]``: what is left of a URL without user info, path, query and fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme.lower()}://{host}"


def configured(environ=os.environ, *, notify_config: str | os.PathLike | None = None) -> list[Target]:
    """Every target configured now, in a stable order; ConfigError for one that cannot be used.

    ``notify_config`` overrides LEANSYNC_NOTIFY_CONFIG.
    """
    urls = [u for u in _SEPARATOR.split(environ.get(ENV_NOTIFY, "").strip()) if u]
    masking.register(*urls)
    config_path = notify_config if notify_config is not None else environ.get(ENV_NOTIFY_CONFIG) or None
    targets: list[Target] = []
    if urls or config_path:
        targets += _apprise_targets(urls, config_path)
    webhook = environ.get(ENV_WEBHOOK_URL, "").strip()
    secret = environ.get(ENV_WEBHOOK_SECRET) or None
    masking.register(webhook, secret)
    if webhook:
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{ENV_WEBHOOK_URL} must be an http:// or https:// URL")
        # Many webhook URLs carry their secret in the path (Slack's, Discord's): only the label is shown.
        masking.register(parts.password, parts.path if parts.path != "/" else None, parts.query)
        targets.append(Target(kind="webhook", label=label_of(webhook), key=target_key(webhook), url=webhook,
                              secret=secret))
    elif secret:
        raise ConfigError(f"{ENV_WEBHOOK_SECRET} is set but {ENV_WEBHOOK_URL} is not")
    seen: set[str] = set()  # the same URL twice is one target
    return [t for t in targets if not (t.key in seen or seen.add(t.key))]


def _apprise_targets(urls: list[str], config_path) -> list[Target]:
    import apprise  # only now: start-up without a target never pays for it

    plugins = []
    for position, url in enumerate(urls, 1):
        plugin = apprise.Apprise.instantiate(url, asset=asset())
        if plugin is None:
            raise ConfigError(f"{ENV_NOTIFY}: URL {position} ({_scheme(url)}) is not one Apprise can send to; "
                              "see https://github.com/caronc/apprise/wiki for the URL forms")
        plugins.append(plugin)
    if config_path:
        plugins += _config_plugins(apprise, config_path)
    targets = []
    for plugin in plugins:
        url = plugin.url(privacy=False)
        private = plugin.url(privacy=True)
        _register_private_pieces(url, private)
        targets.append(Target(kind="apprise", label=label_of(private), key=target_key(url), url=url, plugin=plugin))
    return targets


def _config_plugins(apprise, path) -> list:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"the notification configuration file {path} does not exist or is not a file")
    config = apprise.AppriseConfig(asset=asset())
    config.add(os.path.abspath(path))
    plugins = config.services()
    if not plugins:
        raise ConfigError(f"the notification configuration file {path} holds no URL Apprise can send to "
                          "(Apprise's TEXT or YAML format)")
    return plugins


def _register_private_pieces(url: str, private: str) -> None:
    """Register the URL and every piece of it that Apprise's privacy form hides (tokens, passwords)."""
    masking.register(url)
    shown = set(_PIECES.findall(private))
    masking.register(*(piece for piece in _PIECES.findall(url) if piece not in shown))


def _scheme(url: str) -> str:
    scheme = url.partition("://")[0]
    return f"{scheme}://" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme) else "no scheme"


def asset():
    """Apprise's settings for leansync: nothing persisted to disk."""
    import apprise

    return apprise.AppriseAsset(storage_mode="memory")
