"""`dicomnode jobs ...`: list, show, retry and cancel jobs in the node's database."""

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dicomnode.cli.common import (
    ConfigOption,
    JsonOption,
    WideOption,
    console,
    fail,
    is_wide,
    node_database,
    print_json,
    reported_errors,
    settings_from,
)
from dicomnode.cli.safe_text import shown
from dicomnode.config import Settings
from dicomnode.status import JobStatus

if TYPE_CHECKING:
    from dicomnode.db import Database, JobRecord
    from dicomnode.imaging.outcome import SeriesOutcome

app = typer.Typer(help="Inspect and steer jobs.", no_args_is_help=True)

_STATUS_STYLE = {
    "done": "green",
    "failed": "yellow",
    "dead": "bold red",
    "cancelled": "dim",
    "held": "magenta",
    "stored": "cyan",  # kept, sent nowhere
    "ok": "green",
    "warn": "yellow",
    "fail": "bold red",
}


def _database(settings: Settings, *, read_only: bool = False) -> "Database":
    return node_database(settings, read_only=read_only)


def _deliveries(job: "JobRecord") -> str:
    return shown(", ".join(f"{d.destination}:{d.status}" for d in job.deliveries) or "-")


def _error_cell(error: str) -> str:
    """An error in the listing: whole for a script (or --wide), its start in a terminal."""
    return error if is_wide() else error[:60]


def _status(status: str) -> str:
    """A state, coloured; any other text (a QA verdict read back from details) is shown as is."""
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else shown(status)


@app.command("list")
def list_(
    status: Annotated[
        JobStatus | None,
        typer.Option("--status", "-s", help="Only jobs in this state.", case_sensitive=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """List jobs, newest first."""
    from dicomnode.db.jobs import list_jobs

    jobs = list_jobs(_database(settings_from(config), read_only=True), status, limit)
    if as_json:
        print_json({"jobs": [job.as_dict() for job in jobs]})
        return
    table = Table(
        "id",
        "part",
        "status",
        "attempts",
        "instances",
        "series",
        "deliveries",
        "updated (UTC)",
        "error",
        title=f"{len(jobs)} job(s)",
    )
    for job in jobs:
        table.add_row(
            str(job.id),
            shown(job.part),
            _status(job.status),
            str(job.attempts),
            str(job.instances),
            shown(job.series_uid),
            _deliveries(job),
            job.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            shown(_error_cell(job.error or "")),
        )
    console.print(table)


def _print_job(job: "JobRecord", siblings: "list[JobRecord]") -> None:
    data = job.as_dict()
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "part",
        "status",
        "attempts",
        "instances",
        "study_uid",
        "series_uid",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "lease_owner",
        "error",
    ):
        value = data[key]
        table.add_row(key, _status(str(value)) if key == "status" else shown(value or "-"))
    console.print(table)
    deliveries = Table(
        "destination", "status", "attempts", "sent", "updated", "error", title="deliveries"
    )
    for d in data["deliveries"]:
        deliveries.add_row(
            shown(d["destination"]),
            _status(d["status"]),
            str(d["attempts"]),
            str(d["sent"]),
            shown(d["updated_at"]),
            shown(d["error"] or ""),
        )
    console.print(deliveries)
    if job.details:
        from dicomnode.imaging.outcome import SeriesOutcome

        _print_details(SeriesOutcome.from_dict(job.details))
    if siblings:
        console.print(
            "other jobs of this series: "
            + ", ".join(f"{s.id} ({shown(s.part)}: {_status(s.status)})" for s in siblings)
        )


def _print_details(outcome: "SeriesOutcome") -> None:
    """The enhancement of the last attempt: per method, where it ran and what it measured."""
    console.print(f"enhancement: {shown(outcome.status)}", soft_wrap=True)
    table = Table(
        "method",
        "version",
        "device",
        "images",
        "PSNR dB",
        "SSIM",
        "self-check vs bicubic",
        "QA",
        "seconds",
        title="derived series (metrics vs source)",
    )
    for m in outcome.methods:
        table.add_row(
            shown(m.method),
            shown(m.version),
            shown(m.device),
            str(len(m.images)),
            "-" if m.psnr_mean_db is None else f"{m.psnr_mean_db:.2f}",
            f"{m.ssim_mean:.4f}",
            m.self_check_text,
            _status(m.qa),
            f"{m.timings.total_s:.1f}",
        )
    if outcome.methods:
        console.print(table)
    for declined in outcome.declined:
        console.print(f"not enhanced: {shown(declined.reason)}", soft_wrap=True)


@app.command("show")
def show(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """Show one job with its deliveries (and, with storage commitment, what each destination
    confirmed keeping: committed, failed and pending instances)."""
    from dicomnode.db.commitments import commitment_counts
    from dicomnode.db.jobs import get_job, list_jobs

    db = _database(settings_from(config), read_only=True)
    job = get_job(db, job_id)
    if job is None:
        fail(f"job {job_id} does not exist")
    commitments = commitment_counts(db, job.id)
    if as_json:
        data = job.as_dict()
        for delivery in data["deliveries"]:
            delivery["commitment"] = commitments.get(delivery["destination"])
        print_json(data)
    else:
        siblings = [s for s in list_jobs(db, series_uid=job.series_uid) if s.id != job.id]
        _print_job(job, siblings)
        _print_commitments(commitments)


def _print_commitments(commitments: dict[str, dict[str, int]]) -> None:
    if not commitments:
        return
    table = Table("destination", "committed", "failed", "pending", title="storage commitment")
    for destination, counts in sorted(commitments.items()):
        table.add_row(
            shown(destination),
            str(counts["committed"]),
            str(counts["failed"]),
            str(counts["pending"]),
        )
    console.print(table)


@app.command("retry")
def retry(
    job_id: Annotated[int, typer.Argument(metavar="ID")], config: ConfigOption = None
) -> None:
    """Queue a dead, failed or cancelled job again now, with fresh attempts."""
    from dicomnode.db.admin import retry_job

    with reported_errors():
        job = retry_job(_database(settings_from(config)), job_id)
    console.print(f"job {job.id} queued again ({job.instances} instances)")


@app.command("release")
def release(
    job_id: Annotated[int, typer.Argument(metavar="ID")], config: ConfigOption = None
) -> None:
    """Send the derived series that QA held back (enhance.qa_action = "hold")."""
    from dicomnode.db.admin import release_job

    with reported_errors():
        job = release_job(_database(settings_from(config)), job_id)
    console.print(f"job {job.id} released: it runs again and forwards its derived series")


@app.command("cancel")
def cancel(
    job_id: Annotated[int, typer.Argument(metavar="ID")], config: ConfigOption = None
) -> None:
    """Cancel a job that has not finished (its inputs stay in the spool)."""
    from dicomnode.db.admin import cancel_job

    with reported_errors():
        job = cancel_job(_database(settings_from(config)), job_id)
    console.print(f"job {job.id} cancelled")
