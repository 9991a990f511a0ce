"""`dicomnode doctor`: check that the spool and the database agree; `--repair` what is safe."""

import dataclasses
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
from dicomnode.cli.safe_text import shown


def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            help="Index orphan files, point rows at moved files, quarantine files that are "
            "not DICOM, delete unfinished temp files and outboxes of unknown jobs, and make "
            "the spool and database one pair where that is safe."
        ),
    ] = False,
    adopt_spool: Annotated[
        bool,
        typer.Option(
            help="With --repair: make this spool and this database one pair although each "
            "names another (a restore that mixed them); the spool takes the database's identity."
        ),
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(min=0, help="Ignore files younger than this many seconds (in flight)."),
    ] = 60.0,
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """Report a spool and database that are not one pair (an unmounted disk, a lost
    database), spool files without rows, rows without files, files moved by hand, stale temp
    files, outboxes of unknown jobs and low disk; --repair indexes, points rows at moved files,
    quarantines (not DICOM), removes what is safe and makes the spool and database one pair.

    Exit 0 when nothing is left to fix, 1 otherwise (missing files always need a resend), 2 when
    there is no database where the settings say (without --repair it is only read).
    """
    settings = settings_from(config)
    from dicomnode.pipeline.doctor import examine
    from dicomnode.spool import Spool

    db = node_database(settings, read_only=not repair)
    with reported_errors():
        spool = Spool(settings.node.data_path / "spool")
        report = examine(
            db,
            spool,
            repair=repair,
            min_age_seconds=min_age,
            min_free_disk_mb=settings.node.min_free_disk_mb,
            max_instance_bytes=settings.node.max_instance_bytes,
            adopt_spool=adopt_spool,
        )
    if as_json:
        summary = {"problems_left": report.problems_left, "disk_low": report.disk_low}
        print_json({**dataclasses.asdict(report), **summary})
    else:
        if report.identity_problem is not None:
            console.print(
                f"spool and database: {report.identity_problem}"
                + (" (done: they are one pair now)" if report.identity_agreed else ""),
                soft_wrap=True,
            )
        console.print(
            f"orphan files: {len(report.orphan_files)} (indexed {len(report.indexed)}, "
            f"unreadable {len(report.unreadable_files)}); missing files: "
            f"{len(report.missing_files)}; stale temp files: {len(report.stale_temp_files)} "
            f"(removed {len(report.removed_temp_files)}); outboxes of unknown jobs: "
            f"{len(report.orphan_outboxes)} (removed {len(report.removed_outboxes)})"
            + (
                "; --repair indexes the orphan files (--json lists them)"
                if report.orphan_files and not repair
                else ""
            )
        )
        if report.young_files:
            console.print(
                f"not judged: {report.young_files} file(s) without a row younger than "
                f"--min-age {min_age:g} s (being received, perhaps; --min-age 0 judges them)"
            )
        if report.moved_files:
            console.print(
                f"moved files: {len(report.moved_files)} found in the spool where their rows "
                f"name another place (a data_dir moved by hand; e.g. "
                f"{shown(report.moved_files[0]['from'])}); rows pointed at them: "
                f"{len(report.relocated)}"
                + ("" if repair else " (--repair does it; nothing is resent)")
            )
        for outside in report.outside_files:
            console.print(
                f"outside the spool: sop={shown(outside['sop'])} {shown(outside['path'])} "
                "(copy it to its place in this spool, then --repair)",
                soft_wrap=True,
            )
        for path in report.second_copies:
            console.print(
                f"left (its instance's row names another file; indexed, it would be sent "
                f"again): {shown(path)}",
                soft_wrap=True,
            )
        for path in report.quarantined:
            console.print(f"quarantined (not DICOM): {shown(path)}", soft_wrap=True)
        disk = f"disk: {report.free_disk_mb} MB free in {shown(spool.root)}"
        if report.disk_low:
            disk += (
                f", below node.min_free_disk_mb={report.min_free_disk_mb}: every store is "
                "refused with 0xA700 until space is freed"
            )
        console.print(disk)
        for missing in report.missing_files:
            console.print(
                f"missing: sop={shown(missing['sop'])} {shown(missing['path'])} "
                "(ask the sender to resend)"
            )
    if report.problems_left:
        raise typer.Exit(1)
