"""leansync: a durable, queryable history of QuantConnect LEAN engine versions.

The Python API (leansync.library) for orchestrators: ``run_sync``,
``export``, ``notify_pending``, their result types ``SyncResult`` and
``NotifyResult``, and the errors they raise (leansync.errors), all
importable from here. They load on first use, so
``import leansync`` (and ``leansync --help``) stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "run_sync": "leansync.library",
    "export": "leansync.library",
    "SyncResult": "leansync.library",
    "notify_pending": "leansync.library",
    "NotifyResult": "leansync.library",
    "LeansyncError": "leansync.errors",
    "ConfigError": "leansync.errors",
    "SchemaError": "leansync.errors",
    "LockTimeout": "leansync.errors",
    "FetchError": "leansync.errors",
    "AuthError": "leansync.errors",
    "PayloadError": "leansync.errors",
    "GuardError": "leansync.errors",
    "DatabaseError": "leansync.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leansync' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
