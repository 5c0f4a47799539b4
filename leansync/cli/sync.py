"""`leansync sync`: fetch the list, record what changed."""

import json
import sys
from pathlib import Path

import click

from leansync.cli import AppContext, verbosity_options
from leansync.config import DEFAULT_API_URL, ENV_API_URL

SHOWN_CHANGES = 20  # lines of detail in the human summary; --dry-run shows all


@click.command("sync")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, allow_dash=True), metavar="PATH",
              help="Ingest a saved API response instead of calling the API ('-' for stdin).")
@click.option("--dry-run", is_flag=True, help="Compute and print what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--api-url", envvar=ENV_API_URL, default=DEFAULT_API_URL, show_default=True,
              help=f"QuantConnect API base URL [env {ENV_API_URL}].")
@click.option("--user-id", metavar="ID", help="QuantConnect user id (the token comes only from the "
              "environment or ~/.lean/credentials).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True,
              help="HTTP connect and read timeout, seconds.")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Retries on connection errors, timeouts, 429 and 5xx.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True,
              metavar="SECONDS", help="Overall bound on fetching from the API: every attempt, read and wait "
              "between retries together; past it the run fails (exit 1).")
@click.option("--max-response-mb", type=click.FloatRange(min=0, min_open=True), default=256, show_default=True,
              metavar="N", help="Largest API answer to accept, in MiB after decompression; a larger one "
              "fails the run (exit 1) without being read whole.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds to wait for another run's lock before giving up (exit 75).")
@click.option("--allow-mass-removal", is_flag=True,
              help="Apply a run even if it removes more than half of the listed versions.")
@verbosity_options
@click.pass_obj
def sync_command(app: AppContext, from_file, dry_run, as_json, api_url, user_id, timeout, retries,
                 deadline, max_response_mb, lock_timeout, allow_mass_removal):
    """Fetch the current version list and record what changed.

    Exit codes: 0 success, 1 the run failed, 2 usage or configuration error,
    75 another run holds the lock.

    \b
    Example:
      leansync sync -q                          # from cron
      leansync sync --from-file response.json --dry-run
      leansync sync --deadline 120 --max-response-mb 64
    """
    try:  # every failure, configuration included, still gives --json its one object
        from leansync.database import database_exists, make_engine
        from leansync.sync import dry_run as plan_only, sync

        bounds = {"timeout": timeout, "retries": retries, "deadline": deadline,
                  "max_bytes": int(max_response_mb * 1024 * 1024)}
        source = _file_source(from_file) if from_file else _api_source(app, api_url, user_id, **bounds)
        url = app.resolved_database_url()
        if dry_run:
            engine = make_engine(url) if database_exists(url) else None
            result = plan_only(engine, source, allow_mass_removal=allow_mass_removal)
        else:
            result = sync(make_engine(url, create=True), source,
                          lock_timeout=lock_timeout, allow_mass_removal=allow_mass_removal)
    except Exception as exc:
        _print_failure(exc, as_json=as_json)
        raise  # the group prints the one sentence on stderr and exits with the error's code
    _print_result(result, as_json=as_json, quiet=app.quiet)


def _file_source(path: str):
    """A saved response: its bytes are parsed by the run (see sync.plan_against)."""
    from leansync.sync import Source

    if path == "-":
        return Source(label="stdin", fetch=sys.stdin.buffer.read)
    resolved = Path(path).resolve()

    def fetch():
        from leansync.errors import PayloadError

        try:
            return resolved.read_bytes()
        except OSError as exc:
            raise PayloadError(f"cannot read {resolved}: {exc.strerror}") from None

    return Source(label=str(resolved), fetch=fetch)


def _api_source(app: AppContext, api_url: str, user_id: str | None, **bounds):
    """The API; ``bounds`` are fetch_versions' timeout, retries, deadline and max_bytes."""
    from leansync.api import endpoint_url, fetch_versions
    from leansync.config import load_credentials
    from leansync.sync import Source

    credentials = load_credentials(user_id=user_id)  # before anything is sent or written
    if not app.quiet:
        for warning in credentials.warnings:
            click.echo(f"leansync: warning: {warning}", err=True)
    return Source(
        label=endpoint_url(api_url),
        fetch=lambda: fetch_versions(api_url=api_url, credentials=credentials, **bounds),
    )


def _print_failure(exc: Exception, *, as_json: bool) -> None:
    """stdout's part of a failure: the JSON object, and a refused dry run's plan."""
    from leansync.cli import error_message

    refused = getattr(exc, "dry_run_plan", None)  # a dry run the guard would refuse
    if as_json:
        document = {"status": "failed", "run_id": getattr(exc, "run_id", None), "error": error_message(exc)}
        if refused is not None:
            document.update(dry_run=True, **refused.counts(), changes=refused.changes())
        click.echo(json.dumps(document))
    elif refused is not None:  # always news (it removes versions), so -q prints it too
        _print_plan(refused, head="dry run, nothing written; the mass-removal guard would refuse this run",
                    every=True)


def _print_result(result, *, as_json: bool, quiet: bool) -> None:
    plan = result.plan
    if as_json:
        if result.dry_run:
            # The same keys as a real run (run_id null: nothing was recorded) plus the plan.
            document = {"status": "dry_run", "run_id": None, **plan.counts(), "changes": plan.changes()}
        else:
            document = {"status": "success", "run_id": result.run_id, **plan.counts()}
        click.echo(json.dumps(document))
        return
    if quiet and not plan.has_changes:
        return
    head = "dry run, nothing written" if result.dry_run else f"run {result.run_id}"
    _print_plan(plan, head=head, every=result.dry_run)


def _print_plan(plan, *, head: str, every: bool) -> None:
    counts = plan.counts()
    click.echo(
        f"{head}: {counts['versions_seen']} versions listed; {counts['inserted']} new, "
        f"{counts['updated']} changed, {counts['removed']} removed, {counts['restored']} restored, "
        f"{counts['unchanged']} unchanged; {counts['new_hashes']} new hashes"
    )
    changes = plan.changes()
    shown = changes if every else changes[:SHOWN_CHANGES]
    for change in shown:
        click.echo("  " + _describe(change))
    if len(changes) > len(shown):
        click.echo(f"  ... and {len(changes) - len(shown)} more (see `leansync changes`)")


def _describe(change: dict) -> str:
    action = change["action"]
    if action == "new_hash":
        return f"new hash   {change['kind']} {change['hash']} (first on {change['first_version_id']})"
    fields = change.get("changed_fields")
    detail = f" ({', '.join(fields)})" if fields else ""
    label = {"insert": "new", "update": "changed", "restore": "restored", "remove": "removed"}[action]
    return f"{label:<10} {change['id']}{detail}"
