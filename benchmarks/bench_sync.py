"""Benchmark leansync's sync against the floor: a plain executemany INSERT.

    python benchmarks/bench_sync.py --versions 100000 [--database-url URL] [--repeat 3]

Each scenario runs in a fresh interpreter (multiprocessing's spawn, so its
peak RSS is its own) on a database prepared for it, and times one call of
leansync.sync.sync() on a response read from a file (as `sync --from-file`
does): reading, JSON parsing, validation, diff, writes and commit; no HTTP
and no process start-up.
Reported: the median of --repeat runs (peak RSS: the largest).

Scenarios:
  initial  N versions into an empty database (schema already created)
  no-op    the same payload again
  churn    1% of versions changed, 1% new, 1% gone
  floor    sqlite3 (or psycopg) executemany INSERT of the same N rows into a
           table with lean_version's columns, one transaction
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

FIELDS = ("name", "description", "ref", "leanHash", "leanCloudHash", "public", "created")


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


# --- children ---------------------------------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_sync(url: str, payload_path: str, out) -> None:
    from sqlalchemy import Engine, event

    from leansync.database import make_engine
    from leansync.sync import Source, sync

    statements = 0

    def count(*_args):
        nonlocal statements
        statements += 1

    event.listen(Engine, "before_cursor_execute", count)
    engine = make_engine(url, create=True)
    # Read inside fetch, as `leansync sync --from-file` does; the run parses it.
    source = Source(label="benchmark", fetch=Path(payload_path).read_bytes)
    before = statements
    t0 = time.perf_counter()
    sync(engine, source, lock_timeout=60, allow_mass_removal=True)
    elapsed = time.perf_counter() - t0
    out.send((elapsed, _peak_rss_mb(), statements - before))


def child_floor(url: str, payload_path: str, out) -> None:
    versions = json.loads(Path(payload_path).read_bytes())["versions"]
    rows = [
        (v["id"], v["name"], v["description"], v["ref"], v["leanHash"], v["leanCloudHash"], v["public"],
         v["created"], "2026-01-01 00:00:00", "2026-01-01 00:00:00", "2026-01-01 00:00:00", None, json.dumps(v))
        for v in versions
    ]
    columns = ("id INTEGER PRIMARY KEY, name TEXT, description TEXT, ref TEXT, lean_hash TEXT, "
               "lean_cloud_hash TEXT, public BOOLEAN, created {ts}, first_seen_at {ts}, last_seen_at {ts}, "
               "updated_at {ts}, removed_at {ts}, raw {json}")
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("///", 1)[1])
        conn.execute(f"CREATE TABLE floor ({columns.format(ts='DATETIME', json='JSON')})")
        conn.commit()
        t0 = time.perf_counter()
        with conn:
            conn.executemany("INSERT INTO floor VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        elapsed = time.perf_counter() - t0
        conn.close()
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(url)
        conn = psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
        with conn.transaction():
            conn.execute("DROP TABLE IF EXISTS floor")
            conn.execute(f"CREATE TABLE floor ({columns.format(ts='timestamptz', json='jsonb')})")
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO floor VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
        elapsed = time.perf_counter() - t0
        with conn.transaction():
            conn.execute("DROP TABLE floor")
        conn.close()
    out.send((elapsed, _peak_rss_mb(), 1))


def in_child(target, *args):
    # spawn, not fork: a fresh interpreter, so peak RSS is the scenario's own.
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    result = parent.recv()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"benchmark child failed with exit code {proc.exitcode}")
    return result


# --- driver -----------------------------------------------------------------

def fresh_database(base_url: str | None, folder: Path) -> str:
    """An empty database with leansync's schema."""
    from leansync.database import downgrade, ensure_schema, make_engine

    if base_url is None:
        url = f"sqlite:///{folder / 'bench.db'}"
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(str(folder / "bench.db") + suffix).unlink(missing_ok=True)
    else:
        url = base_url
        engine = make_engine(url)
        with engine.begin() as conn:
            downgrade(conn, "base")
        engine.dispose()
    engine = make_engine(url, create=True)
    ensure_schema(engine)
    engine.dispose()
    return url


def run(n: int, base_url: str | None, repeat: int) -> dict[str, list[tuple]]:
    versions = make_versions(n)
    results: dict[str, list[tuple]] = {"initial": [], "no-op": [], "churn": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        initial, changed = str(folder / "initial.json"), str(folder / "churn.json")
        Path(initial).write_bytes(body(versions))
        Path(changed).write_bytes(body(churn(versions)))
        del versions
        for _ in range(repeat):
            url = fresh_database(base_url, folder)
            results["initial"].append(in_child(child_sync, url, initial))
            results["no-op"].append(in_child(child_sync, url, initial))
            results["churn"].append(in_child(child_sync, url, changed))
            floor_url = url if base_url else f"sqlite:///{folder / 'floor.db'}"
            Path(folder / "floor.db").unlink(missing_ok=True)
            results["floor"].append(in_child(child_floor, floor_url, initial))
    return results


def report(n: int, results: dict[str, list[tuple]], backend: str) -> str:
    floor = statistics.median(r[0] for r in results["floor"])
    lines = [
        f"N = {n:,} versions, backend {backend}, median of {len(results['floor'])} runs",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}",
        "",
        f"{'scenario':<9} {'seconds':>8} {'versions/s':>11} {'x floor':>8} {'peak RSS MB':>12} {'statements':>11}",
    ]
    for name in ("initial", "no-op", "churn", "floor"):
        seconds = statistics.median(r[0] for r in results[name])
        rss = max(r[1] for r in results[name])
        stmts = statistics.median(r[2] for r in results[name])
        lines.append(f"{name:<9} {seconds:>8.3f} {n / seconds:>11,.0f} {seconds / floor:>8.2f} {rss:>12.0f} {stmts:>11.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--database-url", help="benchmark this database instead of a temporary SQLite file "
                        "(its leansync tables are dropped and recreated)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    backend = "sqlite" if args.database_url is None else args.database_url.split(":", 1)[0]
    print(report(args.versions, run(args.versions, args.database_url, args.repeat), backend))


if __name__ == "__main__":
    sys.exit(main())
