"""A throwaway PostgreSQL cluster for the tests, from the installed server binaries.

``PostgresCluster.start()`` runs initdb and pg_ctl in a private temporary
folder: TCP on 127.0.0.1 and a free port, the unix socket inside that
folder, trust authentication, fsync off (the data is thrown away). ``stop()``
shuts the server down and deletes the folder. Several clusters can run at
once (one per pytest-xdist worker): each has its own folder and port.

PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user that Debian's package creates (or ``nobody``), via
setpriv (or runuser), and the folder belongs to that user.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
    "or on PATH; install them with `apt-get install postgresql` (Debian/Ubuntu) "
    "to run the PostgreSQL tests"
)
SUPERUSER = "postgres"
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # throwaway data: durability costs time and buys nothing
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",  # several helpers' clusters may share a small machine
    # Not UTC, as on many production servers: code or SQL that silently
    # assumes a UTC session (a zoneless literal, a naive datetime) fails here.
    "timezone": "'Asia/Kolkata'",
    "log_min_messages": "warning",
    # Tests make and empty hundreds of short-lived tables; vacuuming and analysing them took
    # server CPU from the tests (about a seventh of the server's in a run) and helps none of them.
    "autovacuum": "off",
}


# give_back's checks: what a test may have changed that emptying the public schema would not undo.
_DATABASE_UNCHANGED = """
SELECT d.datdba = current_user::regrole AND d.datacl IS NULL AND d.datconnlimit = -1 AND d.datallowconn
   AND NOT d.datistemplate
   AND NOT EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
   AND NOT EXISTS (SELECT FROM pg_shdescription c WHERE c.objoid = d.oid)
   AND NOT EXISTS (SELECT FROM pg_prepared_xacts x WHERE x.database = d.datname)  -- they keep their locks
   AND NOT EXISTS (SELECT FROM pg_replication_slots r WHERE r.database = d.datname)
  FROM pg_database d WHERE d.datname = %s
"""
_NOTHING_OUTSIDE_PUBLIC = """
SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema',
                                                                  'pg_toast')
                                              AND nspname NOT LIKE 'pg\\_temp\\_%'
                                              AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%')
   AND (SELECT array_agg(extname) FROM pg_extension) = ARRAY['plpgsql']::name[]
   AND NOT EXISTS (SELECT FROM pg_default_acl)
   AND NOT EXISTS (SELECT FROM pg_largeobject_metadata)
   AND NOT EXISTS (SELECT FROM pg_event_trigger)
   AND NOT EXISTS (SELECT FROM pg_publication)
   AND NOT EXISTS (SELECT FROM pg_subscription)
   AND NOT EXISTS (SELECT FROM pg_foreign_server)
   AND (SELECT nspowner = 'pg_database_owner'::regrole AND nspacl::text[] = ARRAY[
            'pg_database_owner=UC/pg_database_owner', '=U/pg_database_owner']
          FROM pg_namespace WHERE nspname = 'public')
"""


def find_bindir() -> Path | None:
    """The newest installed server's bin folder (Debian layout first), or None."""

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK) and os.access(
            os.path.join(candidate, "pg_ctl"), os.X_OK
        ):
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


def _private_tempdir(user: pwd.struct_passwd | None) -> Path:
    """A fresh folder the server user can reach: its parents must be traversable."""
    base = Path(tempfile.gettempdir())
    if user is not None and not all(os.stat(p).st_mode & stat.S_IXOTH for p in [base, *base.parents]):
        base = Path("/tmp")
    # Short names: the unix socket path must stay under ~107 bytes.
    path = Path(tempfile.mkdtemp(prefix="leansync-pg-", dir=base))
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    user: pwd.struct_passwd | None = field(init=False, default=None)
    _names: itertools.count = field(init=False, default_factory=lambda: itertools.count(1))
    _admin: object = field(init=False, default=None)  # psycopg.Connection, kept for create/drop
    _spare: list[str] = field(init=False, default_factory=list)  # emptied databases, for take_database

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str | os.PathLike) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if self.user is not None:
            if shutil.which("setpriv"):
                command = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                           "--init-groups", "--", *command]
            else:
                command = ["runuser", "-u", self.user.pw_name, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.root))
        # cwd inside the folder: the server user may not be allowed into ours.
        return subprocess.run(command, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")

    def start(self) -> None:
        self.user = _server_user()
        self.root = _private_tempdir(self.user)
        try:
            self._initdb()
            for attempt in range(START_ATTEMPTS):
                self.port = free_port()
                result = self._run(self.bindir / "pg_ctl", "start", "-w", "-t", "60", "-D", self.datadir,
                                   "-l", self.logfile, "-o", f"-p {self.port}")
                if result.returncode == 0:
                    return
                if attempt == START_ATTEMPTS - 1 or "already in use" not in self.logfile.read_text(errors="replace"):
                    self._check(result, "pg_ctl start")
        except BaseException:
            self._remove()
            raise

    def _initdb(self) -> None:
        result = self._run(self.bindir / "initdb", "-D", self.datadir, "-U", SUPERUSER, "--auth=trust",
                           "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
        self._check(result, "initdb")
        self._run("mkdir", "-m", "700", self.socket_dir)
        settings = {**SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'"}
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        # Appended as the server user would: later lines win over initdb's.
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# leansync tests\n" + lines)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run(self.bindir / "pg_ctl", "stop", "-D", self.datadir, "-m", "immediate", "-w")
        finally:
            self._remove()

    def stop_server(self, mode: str = "fast") -> None:
        """Shut the server down, keeping its data, as an administrator or a failover would."""
        self._check(self._run(self.bindir / "pg_ctl", "stop", "-D", self.datadir, "-m", mode, "-w"), "pg_ctl stop")

    def restart_server(self) -> None:
        """Start a stopped server again, on the same port."""
        result = self._run(self.bindir / "pg_ctl", "start", "-w", "-t", "60", "-D", self.datadir,
                           "-l", self.logfile, "-o", f"-p {self.port}")
        self._check(result, "pg_ctl start")

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # Databases ---------------------------------------------------------------

    def admin(self):
        """A new autocommit psycopg connection to the ``postgres`` database, as superuser."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                               autocommit=True, connect_timeout=30)

    def _admin_connection(self):
        if self._admin is None or self._admin.closed:
            self._admin = self.admin()
        return self._admin

    def create_database(self) -> str:
        name = f"test_{next(self._names)}"
        self._admin_connection().execute(f'CREATE DATABASE "{name}"{self._copy_strategy()}')
        return name

    def take_database(self) -> str:
        """An empty database: one a test gave back (see give_back), or a new one."""
        return self._spare.pop() if self._spare else self.create_database()

    def give_back(self, name: str) -> None:
        """Empty ``name`` for the next test, or drop it where emptying it might leave a trace.

        CREATE DATABASE forces a checkpoint (or copies the template through the
        WAL): on a server the tests keep busy it took a tenth to a quarter of a
        second, about as long as a short test. Emptying the public schema takes
        milliseconds and leaves the database as CREATE DATABASE makes it, as long
        as the test changed nothing outside that schema; whatever it did change
        (a setting, a grant, another schema, ...) sends the database to DROP.
        """
        admin = self._admin_connection()
        if admin.info.server_version < 150000:  # the public schema's default owner and grants differ before 15
            self.drop_database(name)
            return
        # Sessions a test left behind (a killed run's, a held lock's) would keep their locks (advisory
        # ones are keyed by the database's OID, which stays) and settings: end them, waiting until they are gone.
        admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", [name])
        database_clean = admin.execute(_DATABASE_UNCHANGED, [name]).fetchone()
        if database_clean and database_clean[0] and self._empty_public_schema(name):
            self._spare.append(name)
        else:
            self.drop_database(name)

    def _empty_public_schema(self, name: str) -> bool:
        """Drop and re-create the public schema, as initdb makes it, if nothing lives outside it."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=name, autocommit=True,
                             connect_timeout=30) as conn:
            if not conn.execute(_NOTHING_OUTSIDE_PUBLIC).fetchone()[0]:
                return False
            with conn.transaction():
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
        return True

    def _copy_strategy(self) -> str:
        # FILE_COPY (PostgreSQL 15+) copies the template's files; the default,
        # WAL_LOG, also writes all of them to the WAL, which made creating the
        # database a large part of a short test's time.
        return " STRATEGY FILE_COPY" if self._admin_connection().info.server_version >= 150000 else ""

    def clone_database(self, template: str, name: str) -> None:
        """Replace the database ``name`` (its sessions ended) with a copy of ``template`` (which may have none)."""
        admin = self._admin_connection()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{self._copy_strategy()}')

    def drop_database(self, name: str) -> None:
        # FORCE: a test that leaked a connection must not keep its database alive.
        self._admin_connection().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
