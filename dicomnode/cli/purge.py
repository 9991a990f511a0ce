"""`dicomnode purge`: apply the spool retention now (the node also does it on a schedule)."""

from typing import Annotated

import typer

from dicomnode.cli.common import (
    ConfigOption,
    JsonOption,
    WideOption,
    console,
    node_database,
    print_json,
    reported_errors,
    settings_from,
)
from dicomnode.cli.jobs import admin_user
from dicomnode.cli.safe_text import shown


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete delivered series older than retention.keep_days from the spool and job table.

    Only series whose every job is done or cancelled qualify (one at least done, or cancelled
    after every destination took the series), counted from the last change to any of them;
    failed, dead, held and stored jobs keep their inputs. --json prints
    {"dry_run", "keep_days", "series": [{"series_uid", "study_uid", "instances", "job_ids"}]}
    (with --dry-run: series UIDs only).
    """
    settings = settings_from(config)
    from dicomnode.db.identity import recorded_identity
    from dicomnode.pipeline.retention import due_for_purge, purge_delivered
    from dicomnode.spool import Spool

    keep = settings.retention.keep_days
    if keep <= 0:
        if as_json:
            print_json({"dry_run": dry_run, "keep_days": keep, "series": []})
        else:
            console.print("retention.keep_days = 0: the spool keeps everything; nothing to do")
        return
    db = node_database(settings, read_only=dry_run)
    with reported_errors():
        if dry_run:
            due = due_for_purge(settings, db)
            if as_json:
                print_json(
                    {"dry_run": True, "keep_days": keep, "series": [{"series_uid": s} for s in due]}
                )
                return
            for series_uid in due:
                console.print(f"would purge series={shown(series_uid)}")
            console.print(f"{len(due)} series delivered more than {keep:g} days ago")
            return
        spool = Spool(settings.node.data_path / "spool", recorded_identity(db))
        purged = purge_delivered(settings, db, spool, user=admin_user())
    if as_json:
        series = [
            {
                "series_uid": item.series_uid,
                "study_uid": item.study_uid,
                "instances": item.instances,
                "job_ids": item.job_ids,
            }
            for item in purged
        ]
        print_json({"dry_run": False, "keep_days": keep, "series": series})
        return
    for item in purged:
        console.print(f"purged series={shown(item.series_uid)} instances={item.instances}")
    console.print(f"{len(purged)} series purged (delivered more than {keep:g} days ago)")
