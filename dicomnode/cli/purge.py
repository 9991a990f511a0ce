"""`dicomnode purge`: apply the spool retention now (the node also does it on a schedule)."""

from typing import Annotated

import typer

from dicomnode.cli.common import ConfigOption, console, reported_errors, settings_from
from dicomnode.cli.jobs import admin_user
from dicomnode.cli.safe_text import shown


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Delete delivered series older than retention.keep_days from the spool and job table.

    Only series whose every job is done (or was superseded) qualify; failed, dead and held jobs
    keep their inputs.
    """
    settings = settings_from(config)
    from dicomnode.db import open_database
    from dicomnode.pipeline.retention import due_for_purge, purge_delivered
    from dicomnode.spool import Spool

    keep = settings.retention.keep_days
    if keep <= 0:
        console.print("retention.keep_days = 0: the spool keeps everything; nothing to do")
        return
    with reported_errors():
        db = open_database(settings.node.effective_database_url)
        if dry_run:
            due = due_for_purge(settings, db)
            for series_uid in due:
                console.print(f"would purge series={shown(series_uid)}")
            console.print(f"{len(due)} series delivered more than {keep:g} days ago")
            return
        purged = purge_delivered(
            settings, db, Spool(settings.node.data_path / "spool"), user=admin_user()
        )
    for item in purged:
        console.print(f"purged series={shown(item.series_uid)} instances={item.instances}")
    console.print(f"{len(purged)} series purged (delivered more than {keep:g} days ago)")
