"""`dicomnode jobs ...`: list and show jobs; retry, release, cancel, resend and discard them.

Every action is written to the job's history with the login that ran it; the node logs it.
"""

import os
import pwd
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dicomnode.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    WideOption,
    console,
    fail,
    is_wide,
    node_database,
    print_json,
    report_error,
    reported_errors,
    settings_from,
)
from dicomnode.cli.safe_text import shown
from dicomnode.config import Settings
from dicomnode.errors import DicomNodeError
from dicomnode.status import DeliveryStatus, JobStatus

# `--status`'s values in its help: typer's own list of them wraps mid-word at 80 columns.
_ALL_STATES = ", ".join(status.value for status in JobStatus)

if TYPE_CHECKING:
    from dicomnode.db import Database, DeliveryRecord, JobRecord
    from dicomnode.imaging.outcome import DeclinedImage, MethodOutcome, SeriesOutcome

app = typer.Typer(help="Inspect and steer jobs.", no_args_is_help=True)

# Job ids are database integers: a larger one was an OverflowError traceback from the driver.
MAX_JOB_ID = 2**63 - 1
JobId = Annotated[
    int,
    typer.Argument(
        metavar="ID", min=1, max=MAX_JOB_ID, help="The job's ID, from 'dicomnode jobs list'."
    ),
]

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


def admin_user() -> str:
    """The login running this command (recorded with each admin action)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container)
        return f"uid {os.getuid()}"


def _database(settings: Settings, *, read_only: bool = False) -> "Database":
    return node_database(settings, read_only=read_only)


def _destination_names(settings: Settings) -> list[str]:
    """The destinations the settings name: an admin's action checks or keeps deliveries by them."""
    return [destination.name for destination in settings.destinations]


def _deliveries(job: "JobRecord", separator: str = ", ") -> str:
    """Each destination's state; in a held job, one that is done without an instance sent
    says it holds nothing (QA held back every derived series: the PACS has nothing of it yet;
    "done" read as delivered). --json keeps the delivery's own state."""
    held = job.status == JobStatus.HELD
    return separator.join(shown(_delivery(d, held=held)) for d in job.deliveries) or "-"


def _delivery(delivery: "DeliveryRecord", *, held: bool) -> str:
    if held and delivery.status == DeliveryStatus.DONE and delivery.sent == 0:
        return f"{delivery.destination}:nothing sent (held)"
    return f"{delivery.destination}:{delivery.status}"


def _status(status: str) -> str:
    """A state, coloured; any other text (a QA verdict read back from details) is shown as is."""
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else shown(status)


@app.command("list")
def list_(
    status: Annotated[
        JobStatus | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATE",
            help=f"Only jobs in this state: {_ALL_STATES}.",
            case_sensitive=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="At most this many, newest first.")
    ] = 100,
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """List jobs, newest first: the newest 100, or --limit N (`total` says how many there are)."""
    from dicomnode.db.jobs import count_jobs, list_jobs

    db = _database(settings_from(config), read_only=True)
    jobs = list_jobs(db, status, limit)
    total = count_jobs(db, status) if len(jobs) == limit else len(jobs)
    if as_json:
        print_json({"jobs": [job.as_dict() for job in jobs], "total": total})
        return
    title = f"{len(jobs)} job(s)"
    if total > len(jobs):
        title = f"the newest {len(jobs)} of {total} jobs (--limit)"
    if is_wide():
        console.print(_jobs_table(jobs, title))
    else:
        _print_jobs_in_a_terminal(jobs, title)


def _jobs_table(jobs: "Sequence[JobRecord]", title: str) -> Table:
    """Every column whole, one line per job: what a script (or --wide) reads."""
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
        title=title,
    )
    for job in jobs:
        table.add_row(
            *_state_cells(job),
            str(job.instances),
            shown(job.series_uid),
            _deliveries(job),
            _updated(job),
            shown(job.error or ""),
        )
    return table


def _state_cells(job: "JobRecord") -> list[str]:
    """Its id, part, status and attempts: how either listing starts a job's row."""
    return [str(job.id), shown(job.part), _status(job.status), str(job.attempts)]


def _updated(job: "JobRecord") -> str:
    return job.updated_at.strftime("%Y-%m-%d %H:%M:%S")


def _print_jobs_in_a_terminal(jobs: "Sequence[JobRecord]", title: str) -> None:
    """The listing in a terminal of 80 columns: the states whole, a destination a line, and
    each error's start on a line of its own under the table (`jobs show ID` has it whole).

    All nine columns in 80 made the states unreadable (`pacs:d…`: done or dead?) and an error
    wrapped over six lines; the series UID and instance count are in `jobs show` and --wide.
    """
    table = Table(
        "id", "part", "status", "attempts", "deliveries", "updated (UTC)", title=title, box=None
    )
    for job in jobs:
        table.add_row(*_state_cells(job), _deliveries(job, separator="\n"), _updated(job))
    console.print(table)
    failed = [job for job in jobs if job.error]
    if failed:
        console.print("\n[bold]errors[/] (whole in `dicomnode jobs show ID`, or with --wide)")
    for job in failed:
        console.print(f"{job.id}: {shown(job.error or '')}", no_wrap=True, overflow="ellipsis")


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
        "claimed_by",
        "error",
    ):
        value = data[key]  # next_attempt_at: null unless queued or failed (JobRecord.as_dict)
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
    _print_history(data["history"])
    if job.details:
        from dicomnode.imaging.outcome import SeriesOutcome

        _print_details(SeriesOutcome.from_dict(job.details))
    hold = (job.outputs or {}).get("hold")
    if job.released and hold:  # the table's QA column is QA's verdict alone
        console.print(f"released by an admin; held before: {shown(hold)}", soft_wrap=True)
    if siblings:
        console.print(
            "other jobs of this series: "
            + ", ".join(f"{s.id} ({shown(s.part)}: {_status(s.status)})" for s in siblings)
        )


def _print_history(history: list[dict[str, object]]) -> None:
    """Every attempt and admin action, oldest first (the error of each attempt is kept)."""
    if not history:
        return
    table = Table("at (UTC)", "event", "attempt", "status", "by", "detail", title="history")
    for event in history:
        table.add_row(
            shown(event["at"]),
            shown(event["kind"]),
            shown(event["attempt"] or ""),
            _status(str(event["status"] or "")),
            shown(event["user"] or ""),
            shown(event["detail"] or ""),
        )
    console.print(table)


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
        "self-check",
        "QA",
        "seconds",
        title="derived series (metrics vs source; self-check vs bicubic at x2-4, vs the "
        "degraded input at x1)",
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
    for method in outcome.methods:
        for line in _qa_lines(method):
            console.print(shown(line), soft_wrap=True)
    for line in _declined_lines(outcome.declined):
        console.print(f"not enhanced: {shown(line)}", soft_wrap=True)


def _qa_lines(method: "MethodOutcome") -> list[str]:
    """Why QA did not pass a method's images (the table says only "warn" or "fail"): how many
    images had its worst verdict, and the reasons of the first of them (`--json`: each)."""
    worst = [image for image in method.images if image.qa.verdict == method.qa != "ok"]
    if not worst:
        return []
    first = worst[0]
    return [
        f"QA {method.method}: {method.qa} on {len(worst)} of {len(method.images)} images, "
        f"e.g. sop={first.source_sop}: {'; '.join(first.qa.reasons)}"
    ]


_DECLINED_LINES = 10  # a series of 500 colour images is one line, not 500 (`--json` has each)


def _declined_lines(declined: "Sequence[DeclinedImage]") -> list[str]:
    """One line per reason (images that share it counted, the first named), at most
    `_DECLINED_LINES` of them and a last one saying how many more."""
    by_reason: dict[str, list[str]] = {}
    for image in declined:
        reason = image.reason.removeprefix(f"sop={image.sop}: ")
        by_reason.setdefault(reason, []).append(image.sop)
    lines = [
        f"sop={sops[0]}: {reason}"
        if len(sops) == 1
        else f"{len(sops)} images (sop={sops[0]}, ...): {reason}"
        for reason, sops in by_reason.items()
    ]
    if len(lines) > _DECLINED_LINES:
        more = len(lines) - _DECLINED_LINES + 1
        lines = [*lines[: _DECLINED_LINES - 1], f"{more} more reasons (see --json)"]
    return lines


@app.command("show")
def show(
    job_id: JobId,
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
        fail(f"job {job_id} does not exist (`dicomnode jobs list` lists them)")
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


_RETRYABLE = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)


@app.command("retry")
def retry(
    job_ids: Annotated[
        list[int] | None,
        typer.Argument(
            metavar="ID", min=1, max=MAX_JOB_ID, help="Job IDs, from 'dicomnode jobs list'."
        ),
    ] = None,
    every: Annotated[
        JobStatus | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATE",
            help="Every job in this state (dead, failed or cancelled): after a PACS outage.",
            case_sensitive=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Queue dead, failed or cancelled jobs again now, with fresh attempts: those named, or
    every job in one state (`--status dead`). A job that cannot be retried is named and the
    others still go (exit 1)."""
    from dicomnode.db.admin import retry_job
    from dicomnode.db.jobs import job_ids_in

    if bool(job_ids) == (every is not None):
        fail("give job IDs or --status, not both and not neither", EXIT_USAGE)
    if every is not None and every not in _RETRYABLE:
        fail(f"only {', '.join(_RETRYABLE)} jobs can be retried, not {every}", EXIT_USAGE)
    settings = settings_from(config)
    db = _database(settings)
    configured = _destination_names(settings)
    with reported_errors():
        chosen = job_ids_in(db, every) if every is not None else list(job_ids or [])
    refused = 0
    for job_id in chosen:
        try:
            job = retry_job(db, job_id, configured, admin_user())
        except DicomNodeError as exc:  # another job's state changed, or it does not exist
            report_error(str(exc))
            refused += 1
            continue
        console.print(f"job {job.id} queued again ({job.instances} instances)")
    if every is not None:
        console.print(f"{len(chosen) - refused} {every} job(s) queued again")
    if refused:
        raise typer.Exit(EXIT_FAILURE)


@app.command("release")
def release(job_id: JobId, config: ConfigOption = None) -> None:
    """Send the derived series that QA held back (enhance.qa_action = "hold"), and only those."""
    from dicomnode.db.admin import release_job

    settings = settings_from(config)
    configured = _destination_names(settings)
    with reported_errors():
        job = release_job(_database(settings), job_id, configured, admin_user())
    console.print(
        f"job {job.id} released: the derived series QA held back are sent as they were made "
        "(nothing is processed or sent twice)"
    )


@app.command("cancel")
def cancel(job_id: JobId, config: ConfigOption = None) -> None:
    """Cancel a job that has not finished (its inputs stay in the spool; retention deletes a
    series keep_days later only once it was delivered)."""
    from dicomnode.db.admin import cancel_job

    with reported_errors():
        job = cancel_job(_database(settings_from(config)), job_id, admin_user())
    console.print(f"job {job.id} cancelled")


@app.command("resend")
def resend(
    job_id: JobId,
    destination: Annotated[
        str | None,
        typer.Option(
            "--destination",
            "-d",
            help="Only to this destination (any configured one that takes the job's part, also "
            "one the job never had).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Send a done job's series again (to each destination it had that takes its part, or to one).

    An originals job sends its instances, a derived job its derived series and metrics reports,
    as they were made (not processed again).
    """
    from dicomnode.db.admin import resend_job

    settings = settings_from(config)
    configured = _destination_names(settings)
    with reported_errors():
        job = resend_job(
            _database(settings),
            job_id,
            configured,
            destination,
            admin_user(),
            takes=settings.sends(),
        )
    what = "instances" if job.part == "originals" else "derived series and reports"
    where = destination or ", ".join(d.destination for d in job.deliveries if d.status == "pending")
    console.print(f"job {job.id} queued to send its {shown(what)} again to {shown(where)}")


@app.command("discard")
def discard(
    job_id: JobId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Delete the series of a dead or cancelled job from the spool and the database.

    Every job of the series goes, with its instances and outputs (retention never purges a
    series that was not delivered). Asks first, unless --yes.
    """
    from dicomnode.db.discard import plan_discard
    from dicomnode.db.identity import recorded_identity
    from dicomnode.pipeline.retention import discard as discard_job_series
    from dicomnode.spool import Spool

    settings = settings_from(config)
    db = _database(settings)
    with reported_errors():
        plan = plan_discard(db, job_id)
    summary = (
        f"series={shown(plan.series_uid)} study={shown(plan.study_uid)}: "
        f"job(s) {', '.join(map(str, plan.job_ids))} and {plan.instances} instance(s)"
    )
    if dry_run:
        console.print(f"would discard {summary}", soft_wrap=True)
        return
    if not yes:
        console.print(f"discard {summary}?", soft_wrap=True)
        try:
            confirmed = typer.confirm("Delete them from the spool and the database", default=False)
        except typer.Abort:  # no answer (stdin closed)
            confirmed = False
        if not confirmed:
            fail("not confirmed: nothing deleted (--yes confirms without asking)")
    with reported_errors():
        spool = Spool(settings.node.data_path / "spool", recorded_identity(db))
        result = discard_job_series(db, spool, job_id, admin_user())
    console.print(
        f"discarded series={shown(result.series_uid)}: job(s) "
        f"{', '.join(map(str, result.job_ids))}, {result.instances} instance(s)",
        soft_wrap=True,
    )
