"""Benchmark leansync's sync against the floor (a plain executemany INSERT) and sqlite-utils.

    pip install -r benchmarks/requirements.txt      # sqlite-utils, psutil (benchmark-only)
    python benchmarks/bench_sync.py --versions 100000 [--repeat 3]
    python benchmarks/bench_sync.py --versions 100000 --postgres          # a throwaway local server
    python benchmarks/bench_sync.py --versions 100000 --database-url URL  # your server
    python benchmarks/bench_sync.py --versions 100000 1000000 --repeat 1  # the scale check

Everything is measured in the same invocation, so the ratios compare runs
made under the same load. The response files are written first by a
separate process, so generating them costs no measured process any memory.

In-process (each scenario in a fresh interpreter, multiprocessing's spawn,
so its peak RSS is its own): one call of leansync.history.sync.sync() on a response
read from a file, as `sync --from-file` does: reading, JSON parsing,
validation, diff, writes and commit; no process start-up.

Whole-process (as cron runs it): the installed command
`leansync --database-url URL sync -q --from-file FILE` as a child process,
start-up included; wall time and the peak RSS and file-system writes of
that one child (os.wait4's rusage).

Scenarios, each on a database whose schema is already created:
  initial      N versions into an empty database
  no-op        the same payload again
  churn        1% of versions changed, 1% new, 1% gone
  start-up     (whole-process) a no-op sync of 10 versions: what start-up and
               a run's fixed costs add to every whole-process figure
  floor        sqlite3 (or psycopg) executemany INSERT of the same N rows
               into a table with lean_version's 13 columns, one transaction
  su-objects   (SQLite only) sqlite-utils `upsert_all(versions, pk="id")` of
               the API's objects as sent into a fresh file; whole-process:
               `sqlite-utils upsert FILE lean_version versions.json --pk id`
  su-columns   (SQLite only, in-process) the same with the floor's 13-column
               rows (raw JSON text included)

Reported: medians of --repeat runs of wall seconds and of CPU seconds (user
+ system of the measured process; on PostgreSQL the server's work is not in
it); peak RSS is the largest of the runs. Ratios ("x floor") are to the
in-process floor of the same invocation, wall to wall and CPU to CPU.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import multiprocessing
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

SYNC_SCENARIOS = ("initial", "no-op", "churn")
FIXED_SIZE = {"start-up", "sample no-op", "import sqlalchemy"}  # no versions/s for these
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lean-versions-read.json"
STARTUP_VERSIONS = 10
INSTALL_HINT = "pip install -r benchmarks/requirements.txt"


def make_versions(n: int, *, seed: int = 7) -> list[dict]:
    """N realistic versions: increasing ids, 40-hex hashes shared by 1-3 ids."""
    rng = random.Random(seed)
    start = datetime(2015, 1, 1, tzinfo=timezone.utc)
    versions, vid, lean_hash = [], 1000, None
    for i in range(n):
        vid += rng.randint(1, 3)
        if lean_hash is None or rng.random() < 0.6:  # ~1.7 ids per commit, like the real tags
            lean_hash = "%040x" % rng.getrandbits(160)
            cloud = "%040x" % rng.getrandbits(160)
            created = (start + timedelta(minutes=37 * i)).strftime("%Y-%m-%d %H:%M:%S")
        versions.append({
            "id": vid,
            "created": created,
            "description": f"Merge pull request #{rng.randint(1000, 9999)} from QuantConnect/feature-{i}",
            "leanHash": lean_hash,
            "leanCloudHash": cloud,
            "name": f"v2.5.{vid}",
            "ref": "master",
            "public": rng.random() < 0.95,
        })
    return versions


def churn(versions: list[dict], *, seed: int = 11) -> list[dict]:
    """1% changed, 1% new (higher ids), 1% gone."""
    rng = random.Random(seed)
    n = len(versions)
    k = max(1, n // 100)
    kept = [dict(v) for v in versions]
    gone = set(rng.sample(range(n), k))
    changed = rng.sample([i for i in range(n) if i not in gone], k)
    for i in changed:
        kept[i]["leanHash"] = "%040x" % rng.getrandbits(160)
        kept[i]["description"] += " (rebuilt)"
    top = versions[-1]["id"]
    new = [dict(versions[-1], id=top + j + 1, name=f"v2.5.{top + j + 1}", leanHash="%040x" % rng.getrandbits(160))
           for j in range(k)]
    return [v for i, v in enumerate(kept) if i not in gone] + new


def body(versions: list[dict]) -> bytes:
    return json.dumps({"success": True, "errors": [], "versions": versions}).encode()


STAMP = "2026-01-01 00:00:00"
FLOOR_COLUMNS = ("id", "name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created",
                 "first_seen_at", "last_seen_at", "updated_at", "removed_at", "raw")


def floor_rows(versions: list[dict]) -> list[tuple]:
    """lean_version's 13 columns for each version, in the driver's form."""
    return [
        (v["id"], v["name"], v["description"], v["ref"], v["leanHash"], v["leanCloudHash"], v["public"],
         v["created"], STAMP, STAMP, STAMP, None, json.dumps(v))
        for v in versions
    ]


# --- children ---------------------------------------------------------------

def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: across fork and exec that keeps the
    parent's peak at the fork, so a child would report at least its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


class timed:
    """Wall and CPU seconds of a block: on a shared machine the CPU time moves less with the load."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def child_generate(n: int, folder: str, out) -> None:
    """Write the response files (and sqlite-utils' rows) so that no measured process builds them."""
    versions = make_versions(n)
    base = Path(folder)
    (base / "initial.json").write_bytes(body(versions))
    (base / "churn.json").write_bytes(body(churn(versions)))
    (base / "versions.json").write_text(json.dumps(versions))  # the API's objects, for `sqlite-utils upsert`
    (base / "tiny.json").write_bytes(body(versions[:STARTUP_VERSIONS]))
    out.send(None)


def child_sync(url: str, payload_path: str, profile_path: str | None, out) -> None:
    from sqlalchemy import Engine, event

    from leansync.store.database import make_engine
    from leansync.history.sync import Source, sync

    statements = 0

    def count(*_args):
        nonlocal statements
        statements += 1

    event.listen(Engine, "before_cursor_execute", count)
    engine = make_engine(url, create=True)
    # Read inside fetch, as `leansync sync --from-file` does; the run parses it.
    source = Source(label="benchmark", fetch=Path(payload_path).read_bytes)
    profiler = cProfile.Profile() if profile_path else None
    before = statements
    with timed() as took:
        if profiler:
            profiler.enable()
        sync(engine, source, lock_timeout=60, allow_mass_removal=True)
        if profiler:
            profiler.disable()
    if profiler:
        profiler.dump_stats(profile_path)
    out.send((took.wall, _peak_rss_mb(), statements - before, took.cpu))


def child_floor(url: str, payload_path: str, out) -> None:
    rows = floor_rows(json.loads(Path(payload_path).read_bytes())["versions"])
    columns = ("id INTEGER PRIMARY KEY, name TEXT, description TEXT, ref TEXT, lean_hash TEXT, "
               "lean_cloud_hash TEXT, public BOOLEAN, created {ts}, first_seen_at {ts}, last_seen_at {ts}, "
               "updated_at {ts}, removed_at {ts}, raw {json}")
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("///", 1)[1])
        conn.execute(f"CREATE TABLE floor ({columns.format(ts='DATETIME', json='JSON')})")
        conn.commit()
        with timed() as took, conn:
            conn.executemany("INSERT INTO floor VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.close()
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(url)
        conn = psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
        with conn.transaction():
            conn.execute("DROP TABLE IF EXISTS floor")
            conn.execute(f"CREATE TABLE floor ({columns.format(ts='timestamptz', json='jsonb')})")
        with timed() as took, conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO floor VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
        with conn.transaction():
            conn.execute("DROP TABLE floor")
        conn.close()
    out.send((took.wall, _peak_rss_mb(), 1, took.cpu))


def schema_floor_rows(versions: list[dict], sqlite: bool) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """The rows a first run writes into leansync's own schema, in the driver's form: each version,
    its first state and the first-seen hashes (lowest id per hash, null and "" none), and the run."""
    import hashlib

    stamp = STAMP if sqlite else datetime(2026, 1, 1, tzinfo=timezone.utc)

    def created(text):
        if text is None:
            return None
        value = datetime.fromisoformat(text + "+00:00")
        return value.isoformat(" ", "microseconds")[:26] if sqlite else value

    fields = [(v["name"], v["description"], v["ref"], v["leanHash"], v["leanCloudHash"], v["public"],
               created(v["created"])) for v in versions]
    first: dict[tuple[str, str], int] = {}
    for v in sorted(versions, key=lambda v: v["id"], reverse=True):  # the last write is the lowest id
        for kind, key in (("lean", "leanHash"), ("lean_cloud", "leanCloudHash")):
            if v[key]:
                first[(kind, v[key])] = v["id"]
    api = ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")
    raw = [json.dumps(v, separators=(",", ":")) for v in versions]
    return {
        "sync_run": (("id", "started_at", "finished_at", "status", "source"),
                     [(1, stamp, stamp, "success", "floor")]),
        "lean_version": (("id", *api, "first_seen_at", "updated_at", "removed_at", "raw", "raw_digest"),
                         [(v["id"], *f, stamp, stamp, None, r, hashlib.blake2b(r.encode(), digest_size=16).hexdigest())
                          for v, f, r in zip(versions, fields, raw)]),
        "lean_version_history": (("version_id", *api, "valid_from", "valid_to", "changed_fields", "sync_run_id",
                                  "extra"), [(v["id"], *f, stamp, None, None, 1, None)
                                             for v, f in zip(versions, fields)]),
        "lean_hash": (("kind", "hash", "first_seen_at", "first_version_id", "sync_run_id"),
                      [(kind, value, stamp, vid, 1) for (kind, value), vid in sorted(first.items())]),
    }


def child_schema_floor(url: str, payload_path: str, out) -> None:
    """The same rows a first run writes, into leansync's schema (created beforehand, empty),
    in one transaction: sqlite3 executemany with leansync's connection settings, or psycopg COPY."""
    sqlite = url.startswith("sqlite")
    tables = schema_floor_rows(json.loads(Path(payload_path).read_bytes())["versions"], sqlite)
    rows = sum(len(r) for _, r in tables.values())
    if sqlite:
        import sqlite3

        conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")  # as leansync.store.database sets them: WAL, FKs
        conn.execute("PRAGMA journal_mode = WAL")
        with timed() as took:
            conn.execute("BEGIN")
            for table, (columns, values) in tables.items():
                marks = ", ".join("?" for _ in columns)
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
            conn.execute("COMMIT")
        conn.close()
    else:
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        with timed() as took:
            with conn.transaction(), conn.cursor() as cur:
                for table, (columns, values) in tables.items():
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in values:
                            copy.write_row(row)
        conn.close()
    out.send((took.wall, _peak_rss_mb(), rows, took.cpu))


def child_sqlite_utils(path: str, payload_path: str, shape: str, out) -> None:
    import sqlite_utils

    versions = json.loads(Path(payload_path).read_bytes())["versions"]
    # "objects": the API's objects as they come (what a sqlite-utils user would load);
    # "columns": the floor's 13-column rows, raw JSON included.
    rows = versions if shape == "objects" else [dict(zip(FLOOR_COLUMNS, row)) for row in floor_rows(versions)]
    del versions
    db = sqlite_utils.Database(path)
    with timed() as took:
        db["lean_version"].upsert_all(rows, pk="id")
    db.close()
    out.send((took.wall, _peak_rss_mb(), None, took.cpu))


def in_child(target, *args):
    # spawn, not fork: a fresh interpreter, so peak RSS is the scenario's own.
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = None
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"benchmark child {target.__name__} failed with exit code {proc.exitcode}")
    return result


def whole_process(argv: list[str]) -> tuple[float, float, float, float]:
    """Run one command: wall seconds, peak RSS MB, file-system writes MB and CPU seconds (its own rusage)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{err.read().decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_oublock * 512 / 1e6, usage.ru_utime + usage.ru_stime


def installed(command: str, hint: str) -> str:
    """A console script of this environment (the one running the benchmark), else from PATH."""
    local = Path(sys.executable).parent / command
    found = str(local) if local.exists() else shutil.which(command)
    if found is None:
        raise SystemExit(f"the `{command}` command is not installed; {hint}")
    return found


# --- databases --------------------------------------------------------------

def child_prepare(spec: dict, out) -> None:
    """An empty database with leansync's schema; its URL. In a child, so the driver stays small."""
    from leansync.store.database import downgrade, ensure_schema, make_engine

    if spec["kind"] == "cluster":
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=spec["port"], user=spec["user"], dbname="postgres",
                             autocommit=True) as admin:
            for name in spec["drop"]:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{spec["name"]}"')
        url = spec["url"]
    elif spec["kind"] == "server":
        url = spec["url"]
        engine = make_engine(url)
        with engine.begin() as conn:
            downgrade(conn, "base")
        engine.dispose()
    else:
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{spec['path']}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{spec['path']}"
    engine = make_engine(url, create=True)
    ensure_schema(engine)
    engine.dispose()
    out.send(url)


@dataclass
class Backend:
    """Where the benchmark's databases live: temporary SQLite files or one PostgreSQL server.

    The driver imports neither leansync nor a driver: a child's peak RSS as
    the kernel reports it (wait4) is never below its parent's at the fork.
    """

    name: str
    folder: Path
    server_url: str | None = None  # --database-url: one database, its leansync tables recreated each time
    cluster: object = None  # --postgres: tests/pg_cluster.PostgresCluster, a fresh database each time
    _databases: list[str] = field(default_factory=list)
    _made: itertools.count = field(default_factory=itertools.count)

    def fresh(self, tag: str) -> str:
        """An empty database with leansync's schema."""
        if self.cluster is not None:
            name = f"bench_{next(self._made)}"
            spec = {"kind": "cluster", "port": self.cluster.port, "user": "postgres", "drop": self._databases,
                    "name": name, "url": self.cluster.url(name)}
            self._databases = [name]
        elif self.server_url is not None:
            spec = {"kind": "server", "url": self.server_url}
        else:
            spec = {"kind": "sqlite", "path": str(self.folder / f"{tag}.db")}
        return in_child(child_prepare, spec)

    def floor_url(self, url: str) -> str:
        if self.name != "sqlite":
            return url
        path = self.folder / "floor.db"
        path.unlink(missing_ok=True)
        return f"sqlite:///{path}"


def start_cluster():
    """A throwaway local PostgreSQL server, as the tests use (tests/pg_cluster.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pg_cluster import INSTALL_HINT as PG_HINT, PostgresCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(PG_HINT)
    cluster = PostgresCluster(bindir)
    cluster.start()
    return cluster


# --- driver -----------------------------------------------------------------

def run(n: int, backend: Backend, *, repeat: int, modes: set[str], comparisons: bool,
        profile_dir: Path | None) -> dict[str, list[tuple]]:
    """{"in-process initial": [(seconds, peak MB, statements), ...], "whole no-op": [...], ...}"""
    results: dict[str, list[tuple]] = {}
    folder = backend.folder
    payload = {"initial": str(folder / "initial.json"), "no-op": str(folder / "initial.json"),
               "churn": str(folder / "churn.json")}
    in_child(child_generate, n, str(folder))
    leansync = installed("leansync", "pip install -e . in this environment") if "whole" in modes else None
    for _ in range(repeat):
        if "in-process" in modes:
            url = backend.fresh("in-process")
            for scenario in SYNC_SCENARIOS:
                results.setdefault(f"in-process {scenario}", []).append(
                    in_child(child_sync, url, payload[scenario], None))
        if "whole" in modes:
            url = backend.fresh("start-up")
            tiny = [leansync, "--database-url", url, "sync", "-q", "--from-file", str(folder / "tiny.json")]
            whole_process(tiny)
            results.setdefault("whole start-up", []).append(whole_process(tiny))  # a no-op of 10 versions
            url = backend.fresh("whole")
            for scenario in SYNC_SCENARIOS:
                argv = [leansync, "--database-url", url, "sync", "-q", "--from-file", payload[scenario]]
                results.setdefault(f"whole {scenario}", []).append(whole_process(argv))
            # Start-up against its own floor: a no-op of the shipped sample, and Python importing SQLAlchemy.
            url = backend.fresh("sample")
            argv = [leansync, "--database-url", url, "sync", "-q", "--from-file", str(SAMPLE)]
            whole_process(argv)
            results.setdefault("whole sample no-op", []).append(whole_process(argv))
            results.setdefault("whole import sqlalchemy", []).append(
                whole_process([sys.executable, "-c", "import sqlalchemy"]))
        results.setdefault("in-process floor", []).append(
            in_child(child_floor, backend.floor_url(url), payload["initial"]))
        results.setdefault("in-process schema-floor", []).append(
            in_child(child_schema_floor, backend.fresh("schema-floor"), payload["initial"]))
        if comparisons and backend.name == "sqlite":
            target = folder / "sqlite-utils.db"
            for shape in ("objects", "columns"):
                target.unlink(missing_ok=True)
                results.setdefault(f"in-process su-{shape}", []).append(
                    in_child(child_sqlite_utils, str(target), payload["initial"], shape))
            if "whole" in modes:
                target.unlink(missing_ok=True)
                argv = [installed("sqlite-utils", INSTALL_HINT), "upsert", str(target), "lean_version",
                        str(folder / "versions.json"), "--pk", "id"]
                results.setdefault("whole su-objects", []).append(whole_process(argv))
    if profile_dir is not None:  # a separate, untimed pass: cProfile slows what it watches
        profile_dir.mkdir(parents=True, exist_ok=True)
        url = backend.fresh("profile")
        for scenario in SYNC_SCENARIOS:
            out = profile_dir / f"{backend.name}-{n}-{scenario}.prof"
            in_child(child_sync, url, payload[scenario], str(out))
            print(f"\n== profile {backend.name} N={n:,} {scenario} ({out}) ==")
            stats = pstats.Stats(str(out))
            stats.sort_stats("tottime").print_stats(18)
            stats.sort_stats("cumulative").print_stats(25)
    return results


def report(n: int, results: dict[str, list[tuple]], backend: str, repeat: int) -> str:
    floor = statistics.median(r[0] for r in results["in-process floor"])
    floor_cpu = statistics.median(r[3] for r in results["in-process floor"])
    lines = [
        f"N = {n:,} versions, backend {backend}, median of {repeat} run(s)",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}, load average {os.getloadavg()[0]:.2f} at the end",
        f"driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
        "(the whole-process peaks cannot be below it)",
    ]

    # The schema floor: the same rows a first run writes, into leansync's tables (issue 18).
    schema = statistics.median(r[0] for r in results["in-process schema-floor"])
    schema_cpu = statistics.median(r[3] for r in results["in-process schema-floor"])

    def table(mode: str, title: str, third: str, fmt) -> None:
        keys = [k for k in results if k.startswith(f"{mode} ")]
        if not keys:
            return
        lines.extend(["", title, f"{'scenario':<18} {'seconds':>8} {'versions/s':>11} {'x floor':>8} "
                      f"{'CPU s':>7} {'x floor':>8} {'x schema':>8} {'CPU x sch':>9} {'peak RSS MB':>12} "
                      f"{third:>11}"])
        for key in keys:
            seconds = statistics.median(r[0] for r in results[key])
            cpu = statistics.median(r[3] for r in results[key])
            rss = max(r[1] for r in results[key])
            rate = "-" if key.split(" ", 1)[1] in FIXED_SIZE else f"{n / seconds:,.0f}"
            lines.append(f"{key.split(' ', 1)[1]:<18} {seconds:>8.3f} {rate:>11} "
                         f"{seconds / floor:>8.2f} {cpu:>7.3f} {cpu / floor_cpu:>8.2f} {seconds / schema:>8.2f} "
                         f"{cpu / schema_cpu:>9.2f} {rss:>12.0f} {fmt([r[2] for r in results[key]]):>11}")

    table("in-process", "in-process (no start-up):", "statements",
          lambda values: "" if values[0] is None else f"{statistics.median(values):.0f}")
    # The client's own file-system writes: on PostgreSQL the server writes, so they say nothing.
    table("whole", "whole process (start-up included; x the in-process floors):", "written MB",
          lambda values: f"{statistics.median(values):.1f}" if backend == "sqlite" else "-")
    if "whole sample no-op" in results:
        sample = statistics.median(r[0] for r in results["whole sample no-op"])
        python = statistics.median(r[0] for r in results["whole import sqlalchemy"])
        lines.append(f"\nstart-up: a no-op of the shipped sample ({SAMPLE.name}) takes {sample:.3f} s, "
                     f"{sample / python:.2f} x `python -c \"import sqlalchemy\"` ({python:.3f} s)")
    return "\n".join(lines)


def scale_report(all_results: dict[int, dict[str, list[tuple]]]) -> str:
    small, large = min(all_results), max(all_results)
    lines = ["", f"scale: N = {large:,} against N = {small:,} (issue 18's targets: time ratio <= 10.5; peak RSS "
             "<= 400 MB initial, <= 300 MB no-op and churn)",
             f"{'scenario':<24} {'seconds':>9} {'ratio':>6} {'CPU ratio':>9} {'peak RSS MB':>12}"]
    for key in all_results[large]:
        if key not in all_results[small]:
            continue
        t_small = statistics.median(r[0] for r in all_results[small][key])
        t_large = statistics.median(r[0] for r in all_results[large][key])
        c_small = statistics.median(r[3] for r in all_results[small][key])
        c_large = statistics.median(r[3] for r in all_results[large][key])
        rss = max(r[1] for r in all_results[large][key])
        lines.append(f"{key:<24} {t_large:>9.3f} {t_large / t_small:>6.2f} {c_large / c_small:>9.2f} {rss:>12.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, nargs="+", default=[100_000], metavar="N",
                        help="one or more N; with two or more, a scale table compares the largest to the smallest")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="benchmark this PostgreSQL database instead of temporary SQLite "
                       "files (its leansync tables are dropped and recreated)")
    where.add_argument("--postgres", action="store_true",
                       help="start a throwaway PostgreSQL server on 127.0.0.1 (tests/pg_cluster.py) and use it")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="in-process,whole",
                        help="comma-separated: in-process, whole (default both)")
    parser.add_argument("--no-sqlite-utils", dest="comparisons", action="store_false",
                        help="skip the sqlite-utils comparison")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="after the timed runs, profile each scenario in-process once (cProfile) into DIR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw results to FILE")
    args = parser.parse_args()
    modes = set(args.modes.split(","))
    if not modes <= {"in-process", "whole"} or not modes:
        parser.error("--modes takes in-process, whole or both")
    if args.comparisons and args.database_url is None and not args.postgres:
        try:
            import sqlite_utils  # noqa: F401
        except ImportError:
            raise SystemExit(f"sqlite-utils is not installed (a benchmark requirement); {INSTALL_HINT} "
                             "or pass --no-sqlite-utils") from None
    # An installed wheel has its bytecode compiled; PYTHONDONTWRITEBYTECODE (set on this project's
    # machine) would otherwise make every whole process compile leansync's sources again.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "leansync")],
                   check=True)
    cluster = start_cluster() if args.postgres else None
    all_results: dict[int, dict[str, list[tuple]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="leansync-bench-") as tmp:
            backend = Backend(name="sqlite" if args.database_url is None and cluster is None else "postgresql",
                              folder=Path(tmp), server_url=args.database_url, cluster=cluster)
            for n in args.versions:
                all_results[n] = run(n, backend, repeat=args.repeat, modes=modes,
                                     comparisons=args.comparisons, profile_dir=args.profile)
                print(report(n, all_results[n], backend.name, args.repeat), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if len(all_results) > 1:
        print(scale_report(all_results))
    if args.json:
        args.json.write_text(json.dumps({str(n): r for n, r in all_results.items()}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
