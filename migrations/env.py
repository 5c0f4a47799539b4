"""Alembic environment shared by `alembic` and leansync itself.

leansync passes its own open connection in ``config.attributes["connection"]``
(Alembic cookbook: "Sharing a Connection"), so a migration runs inside the
caller's transaction and lock. From the command line, the URL comes from
LEANSYNC_DATABASE_URL or leansync's default SQLite file.
"""

import logging.config
import os

from alembic import context

from leansync.store.models import metadata

config = context.config


def run_with(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_standalone() -> None:
    from leansync.config import ENV_DATABASE_URL, default_database_url
    from leansync.store.database import enable_wal, make_engine

    if config.config_file_name:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = os.environ.get(ENV_DATABASE_URL) or default_database_url()
    engine = make_engine(url, create=True)
    enable_wal(engine)
    with engine.begin() as connection:
        run_with(connection)


if context.is_offline_mode():
    raise SystemExit("leansync migrations run online only (they need a connection)")

shared = config.attributes.get("connection")
if shared is not None:
    run_with(shared)
else:
    run_standalone()
