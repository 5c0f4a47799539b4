"""Benchmark `leansync report` on a large history (issue 17): its time, peak RSS and file size.

    pip install -e '.[report]'
    python benchmarks/bench_report.py --versions 100000 [--weeks 12] [--repeat 3]
    python benchmarks/bench_report.py --versions 100000 --postgres   # a throwaway server on 127.0.0.1

The history is bench_sync.py's payload of N versions, backfilled as seen on a
Monday, then its churn (1% changed, 1% new, 1% gone) once a week for --weeks
weeks (`sync --from-file --observed-at`). Then the installed command
`leansync report --output FILE` runs --repeat times as a child process (start-up
included); each run's wall and CPU seconds and peak RSS come from os.wait4 (the
history is built in a separate process, so the driver's own peak stays small).
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_sync import body, churn, installed, make_versions, start_cluster, whole_process  # noqa: E402

START = datetime(2026, 1, 5, 6, 0, tzinfo=timezone.utc)  # a Monday


def build_history(leansync: str, url: str, n: int, weeks: int, folder: Path) -> float:
    """Backfill the history; returns its total wall seconds."""
    versions = make_versions(n)
    total = 0.0
    for week in range(weeks + 1):
        if week:
            versions = churn(versions, seed=week)
        payload = folder / f"week-{week}.json"
        payload.write_bytes(body(versions))
        when = (START + timedelta(weeks=week)).isoformat()
        wall, *_ = whole_process([leansync, "--database-url", url, "sync", "-q", "--from-file", str(payload),
                                  "--observed-at", when])
        total += wall
        payload.unlink()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server instead of SQLite")
    args = parser.parse_args()
    leansync = installed("leansync", "pip install -e '.[report]'")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        folder = Path(tmp)
        cluster = start_cluster() if args.postgres else None
        url = cluster.url(cluster.create_database()) if cluster else f"sqlite:///{folder / 'history.db'}"
        try:
            measure(leansync, url, args, folder)
        finally:
            if cluster:
                cluster.stop()


def _build_in_child(leansync: str, url: str, n: int, weeks: int, folder: Path, out) -> None:
    out.put(build_history(leansync, url, n, weeks, folder))


def measure(leansync: str, url: str, args, folder: Path) -> None:
    # The payloads are built in a child: Linux carries a parent's peak RSS across fork and exec,
    # so a driver that held them would inflate every measured child's ru_maxrss.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_build_in_child, args=(leansync, url, args.versions, args.weeks, folder, queue))
    child.start()
    built = queue.get()
    child.join()
    print(f"history: {args.versions:,} versions, {args.weeks} weekly churns backfilled in {built:.1f} s")
    out = folder / "report.html"
    results = [whole_process([leansync, "--database-url", url, "report", "--output", str(out)])
               for _ in range(args.repeat)]
    size = out.stat().st_size
    backend = "PostgreSQL" if args.postgres else "SQLite"
    wall = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[3] for r in results)
    rss = max(r[1] for r in results)
    print(f"{backend} report (median of {args.repeat}, whole process): {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"peak RSS {rss:.0f} MB, file {size / 1e6:.2f} MB ({size:,} bytes); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
