"""`leansync report`: one self-contained HTML file of charts (Plotly, the `report` extra).

`gather` asks the database the questions (SQLAlchemy Core, both backends,
read-only); `render` draws them as one Plotly figure whose library is inlined
(`include_plotlyjs=True`), so the file opens from disk with no network.
Weeks are ISO weeks, starting Monday 00:00 UTC.
"""

import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, func, select

from leansync.errors import ConfigError

INSTALL_HINT = "the report needs Plotly, which is not installed: pip install 'leansync[report]'"
NEWEST_LISTED = 20
LAST_RUNS = 30
CHANGE_KINDS = ("changed", "removed", "restored")
# A run observed at an earlier moment (sync --observed-at) committed later than that: a run that finished
# after the next one started, or more than this long after its own start, cannot be an ordinary run.
BACKFILL_MIN_SPAN = timedelta(hours=1)
CHART_TITLES = (
    "Release cadence: new versions per week",
    "From commit to cloud: days from created to first seen",
    "History changes per week, by kind",
    f"The newest {NEWEST_LISTED} listed versions",
    f"The last {LAST_RUNS} runs: duration by status",
)


def require_plotly() -> None:
    """A usage error (exit 2) naming what to install when the `report` extra is missing."""
    try:
        import plotly  # noqa: F401  (the package only: its figures load when the report is drawn)
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def week_of(moment: datetime) -> str:
    """The Monday (UTC) starting the ISO week of ``moment``, as YYYY-MM-DD."""
    day = moment.date()
    return (day - timedelta(days=day.weekday())).isoformat()


def all_weeks(weeks) -> list[str]:
    """Every week from the first to the last given, so quiet weeks show as zero."""
    if not weeks:
        return []
    first, last = datetime.fromisoformat(min(weeks)), datetime.fromisoformat(max(weeks))
    return [(first + timedelta(weeks=n)).date().isoformat() for n in range((last - first).days // 7 + 1)]


@dataclass
class ReportData:
    runs: int = 0
    first_run_at: datetime | None = None  # the first successful run: what it listed is left out of 1 and 2
    left_out: int = 0  # versions listed at that run
    new_versions: list[tuple[datetime, bool | None]] = field(default_factory=list)  # (first seen, public)
    delays_days: list[float] = field(default_factory=list)
    changes: list[tuple[datetime, str]] = field(default_factory=list)  # (when, kind)
    newest: list[dict] = field(default_factory=list)
    last_runs: list[dict] = field(default_factory=list)  # oldest first, each with "backfill"


def gather(conn: Connection, *, since: datetime | None = None) -> ReportData:
    """What the charts show, read from the database (nothing is written)."""
    from leansync import read
    from leansync.store.models import lean_version_history, sync_run

    data = ReportData()
    r = sync_run.c
    data.runs = conn.execute(select(func.count()).select_from(sync_run)).scalar_one()
    if not data.runs:
        return data
    data.first_run_at = conn.execute(select(func.min(r.started_at)).where(r.status == "success")).scalar_one()
    E, H = read.lean_version_event.c, lean_version_history.c

    def window(stmt):
        return stmt if since is None else stmt.where(E.event_time >= since)

    if data.first_run_at is None:  # only failed runs: nothing was ever listed
        new = []
    else:  # in SQL, the (often many) versions of the first run are only counted
        first = E.event_time == data.first_run_at
        data.left_out = conn.execute(window(
            select(func.count()).select_from(read.lean_version_event).where(E.event == "new_version", first)
        )).scalar_one()
        new = conn.execute(window(
            select(E.event_time, H.public, H.created)
            .select_from(read.lean_version_event.join(lean_version_history, H.id == E.history_id))
            .where(E.event == "new_version", E.event_time > data.first_run_at)
        )).all()
    for when, public, created in new:
        data.new_versions.append((when, public))
        if created is not None:
            data.delays_days.append(round((when - created).total_seconds() / 86400, 4))
    data.changes = [tuple(row) for row in conn.execute(window(
        select(E.event_time, E.event).where(E.event.in_(CHANGE_KINDS))))]
    data.newest = read.versions(conn, which="listed", limit=NEWEST_LISTED)
    runs_stmt = select(sync_run).order_by(r.id.desc()).limit(LAST_RUNS)
    if since is not None:
        runs_stmt = runs_stmt.where(r.started_at >= since)
    data.last_runs = [dict(row._mapping) for row in conn.execute(runs_stmt)][::-1]  # oldest first
    for run, following in zip(data.last_runs, [*data.last_runs[1:], None]):
        run["backfill"] = is_backfill(run, following)
    return data


def is_backfill(run: dict, following: dict | None) -> bool:
    """Whether a run was recorded as seen at an earlier moment (`sync --observed-at`).

    The schema does not say so; its times do. Runs take turns under the lock,
    so an ordinary run finishes before the next starts, and a run's fetch is
    bounded by its deadline; a backfill's started_at is its WHEN and its
    finished_at the real time. Only a run from a file can be one.
    """
    if run["finished_at"] is None or run["source"].startswith(("http://", "https://")):
        return False
    if following is not None and run["finished_at"] > following["started_at"]:
        return True
    return run["finished_at"] - run["started_at"] > BACKFILL_MIN_SPAN


def _cell(value) -> str:
    """A table cell in Plotly's HTML-like text: text from the API escaped (`<`, `>`, `&`, which
    Plotly decodes again; it would show a `&quot;` as it is, and a `"` needs no escape in text)."""
    from leansync.cli.render import shorten, text_value

    return html.escape(shorten(text_value(value), 48), quote=False)


def render(data: ReportData, *, database: str, built_at: datetime, since: datetime | None) -> str:
    """The HTML document: one Plotly figure, the library inlined."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from leansync.timespec import format_utc

    period = f"since {format_utc(since)}" if since else "the whole history"
    title = (f"LEAN engine versions: leansync report<br><sup>database {html.escape(database, quote=False)} · "
             f"built {format_utc(built_at)} · {period}</sup>")
    if not data.runs:
        fig = go.Figure()
        fig.add_annotation(text="This database has no sync runs yet: there is nothing to chart.",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 18})
        fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=400)
        return fig.to_html(include_plotlyjs=True, full_html=True)

    left_out = (f" (leaving out the {data.left_out} versions listed at the first run, "
                f"{format_utc(data.first_run_at)})" if data.first_run_at else "")
    titles = (CHART_TITLES[0] + left_out, CHART_TITLES[1] + left_out, *CHART_TITLES[2:])
    fig = make_subplots(rows=5, cols=1, subplot_titles=titles, vertical_spacing=0.05, row_heights=[1, 1, 1, 2, 1],
                        specs=[[{"type": "xy"}], [{"type": "xy"}], [{"type": "xy"}], [{"type": "table"}],
                               [{"type": "xy"}]])

    # 1. Cadence: new versions per week, public and private stacked.
    new_weeks = [(week_of(when), bool(public)) for when, public in data.new_versions]
    weeks = all_weeks([week for week, _ in new_weeks])
    for name, public in (("public", True), ("private", False)):
        counts = Counter(week for week, p in new_weeks if p is public)
        fig.add_trace(go.Bar(x=weeks, y=[counts[w] for w in weeks], name=f"new {name}",
                             legendgroup="cadence"), row=1, col=1)
    # 2. Created → first seen, in days.
    fig.add_trace(go.Histogram(x=data.delays_days, name="versions", nbinsx=40, legendgroup="delay",
                               showlegend=False), row=2, col=1)
    # 3. History changes per week by kind.
    changes = Counter((week_of(when), kind) for when, kind in data.changes)
    change_weeks = all_weeks([week for week, _ in changes])
    for kind in CHANGE_KINDS:
        counts = Counter({week: n for (week, k), n in changes.items() if k == kind})
        fig.add_trace(go.Bar(x=change_weeks, y=[counts[w] for w in change_weeks], name=kind,
                             legendgroup="changes"), row=3, col=1)
    # 4. The newest listed versions, with links to their commits.
    columns = ("id", "name", "ref", "public", "created", "first_seen_at", "commit")
    cells = [[_cell(v[c]) for v in data.newest] for c in columns[:-1]]
    cells.append([f'<a href="{html.escape(v["commit_url"])}">{_cell(v["lean_hash"])[:12]}</a>'
                  if v["commit_url"] else "" for v in data.newest])
    fig.add_trace(go.Table(header={"values": [f"<b>{c}</b>" for c in columns]}, cells={"values": cells},
                           columnwidth=[1, 2, 1.2, 1, 2.2, 2.2, 1.4]), row=4, col=1)
    # 5. The last runs: duration by status; a backfill has none, so it is marked instead.
    labels = [f"run {run['id']}" for run in data.last_runs]
    for status, color in (("success", "#2ca02c"), ("failed", "#d62728")):
        chosen = [run for run in data.last_runs if run["status"] == status and not run["backfill"]]
        fig.add_trace(go.Bar(x=[f"run {run['id']}" for run in chosen],
                             y=[_duration(run) for run in chosen], name=f"{status} (seconds)",
                             marker_color=color, legendgroup="runs"), row=5, col=1)
    backfills = [run for run in data.last_runs if run["backfill"]]
    fig.add_trace(go.Scatter(x=[f"run {run['id']}" for run in backfills], y=[0] * len(backfills), mode="markers",
                             marker={"symbol": "diamond", "size": 11,
                                     "color": ["#7f7f7f" if run["status"] == "success" else "#d62728"
                                               for run in backfills]},
                             name="backfill (no duration; red: failed)", legendgroup="runs",
                             text=[f"{run['status']}, observed at {format_utc(run['started_at'])}"
                                   for run in backfills]), row=5, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=labels, type="category", row=5, col=1)
    for row, axis in ((1, "week"), (3, "week")):
        fig.update_xaxes(type="category", title_text=axis, row=row, col=1)
    fig.update_xaxes(title_text="days from created to first seen", row=2, col=1)
    fig.update_yaxes(title_text="versions", row=1, col=1)
    fig.update_yaxes(title_text="versions", row=2, col=1)
    fig.update_yaxes(title_text="events", row=3, col=1)
    fig.update_yaxes(title_text="seconds", row=5, col=1)
    for row, empty in ((1, not data.new_versions), (2, not data.delays_days), (3, not data.changes),
                       (5, not data.last_runs)):
        if empty:
            fig.add_annotation(text="nothing in this period", showarrow=False, row=row, col=1,
                               x=0.5, y=0.5, xref="x domain", yref="y domain")
    fig.update_layout(title=title, barmode="stack", height=2800, legend={"tracegroupgap": 330})
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def _duration(run: dict) -> float | None:
    if run["finished_at"] is None:
        return None
    return round((run["finished_at"] - run["started_at"]).total_seconds(), 3)


def build_report(url: str, *, since: datetime | None = None, built_at: datetime) -> str:
    """The report of the database at ``url``, read in one read-only connection."""
    from leansync.masking import mask
    from leansync.read import reading

    require_plotly()
    with reading(url) as conn:
        data = gather(conn, since=since)
    return render(data, database=mask(url), built_at=built_at, since=since)


def write_report_file(url: str, path: Path, *, since: datetime | None = None, built_at: datetime) -> None:
    from leansync.outputs.files import write_atomically

    document = build_report(url, since=since, built_at=built_at)
    write_atomically(path, document.encode(), what="the report file")
