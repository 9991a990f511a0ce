"""`dicomnode doctor`: find where the spool and the database disagree, and repair what is safe.

Three kinds of inconsistency can follow a crash or a hand-edited data folder:

* an instance file without a row (the process died between the file's rename and the row's commit,
  or a file was copied in): repaired by indexing it like a received instance, so its series
  becomes a job again; not when a row names another file of that instance (a second copy: it is
  left, named, and nothing is sent again). Files that cannot be read as DICOM are moved to
  `spool/quarantine/` (kept for a person to look at, no longer in the way);
* a row whose file is gone (deleted by hand, disk trouble): reported, never "repaired": the row is
  the evidence that an instance was acknowledged and must be resent;
* a row whose file is in the spool under another folder (a data_dir moved or copied by hand: the
  rows name files by their full path): the file is found by its place in the spool's layout
  (study/series/instance) and the row is pointed at it, never indexed as a new arrival (that
  would send the whole spool to the PACS again);
* temp files of writes that never finished: deleted;
* outbox folders of jobs that no longer exist (a purge interrupted by a crash): deleted, since
  derived outputs are made again from the inputs whenever a job runs.

It also reports free disk space below `node.min_free_disk_mb`, the one reason the receiver
refuses every store (0xA700) that no single instance explains.

Files younger than `min_age_seconds` are left alone: a running receiver may be writing them.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from dicomnode.db import Database, ReceivedInstance
from dicomnode.db.instances import (
    instance_paths,
    newest_path,
    record_instance,
    relocate_instances,
    stored_path,
)
from dicomnode.db.jobs import job_ids
from dicomnode.db.records import printable_code
from dicomnode.errors import ConfigError, DecodeError, InstanceTooLarge
from dicomnode.spool import Spool
from dicomnode.spool_identity import identity_problem, make_agree, mismatched

log = logging.getLogger(__name__)
DOCTOR_AET = "DOCTOR"
RELOCATED_PER_TRANSACTION = 1000  # rows pointed at their moved files in one transaction


@dataclass
class DoctorReport:
    orphan_files: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)
    missing_files: list[dict[str, str]] = field(default_factory=list)
    stale_temp_files: list[str] = field(default_factory=list)
    indexed: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    orphan_outboxes: list[int] = field(default_factory=list)
    removed_outboxes: list[int] = field(default_factory=list)
    moved_files: list[dict[str, str]] = field(default_factory=list)  # sop, from, to
    relocated: list[str] = field(default_factory=list)  # SOP UIDs whose rows now name the file
    second_copies: list[str] = field(default_factory=list)  # of an instance with a row: left
    outside_files: list[dict[str, str]] = field(default_factory=list)  # sop, path: not moved
    free_disk_mb: int = 0
    min_free_disk_mb: int = 0
    # Why this database and spool must not run together (`spool_identity`), and whether the
    # repair made them agree.
    identity_problem: str | None = None
    identity_agreed: bool = False
    # Files without a row younger than --min-age: not judged (being received, perhaps).
    young_files: int = 0

    @property
    def disk_low(self) -> bool:
        return self.free_disk_mb < self.min_free_disk_mb

    @property
    def problems_left(self) -> int:
        unindexed = (
            set(self.orphan_files)
            - set(self.indexed)
            - set(self.quarantined)
            - set(self.second_copies)
        )
        stale = set(self.stale_temp_files) - set(self.removed_temp_files)
        outboxes = set(self.orphan_outboxes) - set(self.removed_outboxes)
        moved = {item["sop"] for item in self.moved_files} - set(self.relocated)
        return (
            int(self.identity_problem is not None and not self.identity_agreed)
            + len(unindexed)
            + len(moved)
            + len(self.outside_files)
            + len(self.missing_files)
            + len(stale)
            + len(outboxes)
            + int(self.disk_low)
        )


def _layout_place(name: str) -> str:
    """Where a file sits in the spool's layout: its study and series folders and its name."""
    return os.sep.join(name.rsplit(os.sep, 3)[-3:])


def _relocate(
    db: Database, report: DoctorReport, relocations: list[tuple[str, str, str]], repair: bool
) -> None:
    """Files whose rows name them at another place, as (SOP UID, old path, new path): with
    `repair`, the rows name them here, the newest row last (`serve` looks at it to tell a
    moved spool, so a repair cut short is still told)."""
    report.moved_files += [{"sop": sop, "from": old, "to": new} for sop, old, new in relocations]
    if not repair or not relocations:
        return
    newest = newest_path(db)
    relocations.sort(key=lambda moved: moved[1] == str(newest))
    for start in range(0, len(relocations), RELOCATED_PER_TRANSACTION):
        batch = relocations[start : start + RELOCATED_PER_TRANSACTION]
        relocate_instances(db, batch)
        report.relocated += [sop for sop, _, _ in batch]
    sop, old, new = relocations[-1]
    log.info(
        "doctor pointed the rows of %d moved files at them (the last: sop=%s file=%s, was %s)",
        len(relocations),
        sop,
        new,
        old,
    )


def _orphan(
    db: Database, spool: Spool, report: DoctorReport, path: Path, repair: bool, max_bytes: int
) -> None:
    """A file without a row: with `repair`, indexed as received (or quarantined if unreadable)."""
    report.orphan_files.append(str(path))
    if not repair:
        return
    # Here: only a repair reads DICOM files (pydicom is half a second of `doctor`'s start).
    from pydicom.errors import InvalidDicomError

    try:
        recorded = _index(db, path, max_bytes)
    except (InvalidDicomError, AttributeError, OSError, DecodeError, InstanceTooLarge) as exc:
        report.unreadable_files.append(f"{path}: {exc}")
        report.quarantined.append(str(path))
        log.warning("doctor quarantined unreadable file=%s to=%s", path, spool.quarantine(path))
        return
    if recorded is not None:  # indexed, it would send that instance's series again
        report.second_copies.append(str(path))
        log.warning("doctor left a second copy file=%s (the row names %s)", path, recorded)
        return
    report.indexed.append(str(path))
    log.info("doctor indexed file=%s", path)


def _index(db: Database, path: Path, max_bytes: int) -> Path | None:
    """Record the file as received; the file its row names instead, when it has one already."""
    from dicomnode.dicom.bounded import read_bounded

    ds = read_bounded(path, max_bytes, stop_before_pixels=True)
    recorded = stored_path(db, str(ds.SOPInstanceUID))
    if recorded is not None:
        return recorded
    record_instance(
        db,
        ReceivedInstance(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            modality=printable_code(str(ds.get("Modality", ""))),
            path=path,
            size_bytes=path.stat().st_size,
            calling_aet=DOCTOR_AET,
        ),
    )
    return None


def examine(
    db: Database,
    spool: Spool,
    *,
    repair: bool = False,
    min_age_seconds: float = 60.0,
    min_free_disk_mb: int = 0,
    max_instance_bytes: int = 0,
    adopt_spool: bool = False,
) -> DoctorReport:
    """What is wrong between the spool and the database, and with `repair` what was mended.
    A spool and a database that name different identities are another node's folder or
    database, perhaps alive: `repair` changes nothing then (ConfigError) unless `adopt_spool`
    says the pair is right."""
    if repair and not adopt_spool and mismatched(db, spool):
        raise ConfigError(
            f"setting node.data_dir: {identity_problem(db, spool)}; `doctor --repair` changed "
            "nothing"
        )
    report = DoctorReport(
        free_disk_mb=spool.free_bytes() // 1048576,
        min_free_disk_mb=min_free_disk_mb,
        identity_problem=identity_problem(db, spool),  # before the repair changes the pair
    )
    unseen = instance_paths(db)  # what is left of it after the walk has no file here
    settled = time.time() - min_age_seconds
    orphans, young = [], []
    for name in spool.instance_file_names():
        if unseen.pop(name, None) is not None:
            continue
        (orphans if Path(name).stat().st_mtime <= settled else young).append(name)
    report.young_files = len(young)
    # Rows that name a file outside this spool (a data folder moved or copied by hand: the old
    # copy may still be there), by their place in the spool's layout; and rows whose file in
    # this spool is gone.
    inside = f"{spool.instances_dir}{os.sep}"
    elsewhere = {
        _layout_place(name): (sop, name)
        for name, sop in unseen.items()
        if not name.startswith(inside)
    }
    missing = [
        {"sop": sop, "path": name}
        for name, sop in sorted(unseen.items())
        if name.startswith(inside) and not Path(name).is_file()
    ]
    relocations = []
    for name in orphans:
        moved_from = elsewhere.pop(_layout_place(name), None)
        if moved_from is not None:
            relocations.append((*moved_from, name))
        else:
            _orphan(db, spool, report, Path(name), repair, max_instance_bytes)
    _relocate(db, report, relocations, repair)
    for name in young:  # a copy too new to judge (copied without its times): judged with it
        elsewhere.pop(_layout_place(name), None)
    for sop, name in elsewhere.values():  # no copy here: gone, or only in the old folder
        gone = not Path(name).is_file()
        (report.missing_files if gone else report.outside_files).append({"sop": sop, "path": name})
    report.missing_files += missing
    # The outbox is listed before the jobs are read, and young folders are skipped: a job
    # created meanwhile is never taken for an unknown one.
    outboxes = [
        job_id
        for job_id in spool.outbox_job_ids()
        if (spool.outbox_dir / str(job_id)).stat().st_mtime <= settled
    ]
    known_jobs = job_ids(db)
    for job_id in outboxes:
        if job_id in known_jobs:
            continue
        report.orphan_outboxes.append(job_id)
        if repair:
            spool.clear_outbox(job_id)
            report.removed_outboxes.append(job_id)
            log.info("doctor removed the outbox of job=%d (no such job)", job_id)
    for part in spool.stale_parts(min_age_seconds):
        report.stale_temp_files.append(str(part))
        if repair and spool.remove_part(part, min_age_seconds):
            report.removed_temp_files.append(str(part))
    if repair:  # what the spool holds is indexed, what it lacks listed: the pair is decided
        # Files too young to judge may be what a restored database lacks: not counted yet.
        identity = make_agree(db, spool, counts=not report.young_files)
        report.identity_agreed = True
        if report.identity_problem is not None:
            log.warning("doctor made the database and the spool one pair spool=%s", identity)
    return report
