"""Sending a job's series again from what it left on disk, without processing it anew.

`jobs release` sends the derived series QA held back; `jobs resend` sends what a done job
delivered (an originals job its instances, a derived job its derived series and reports). Both
read the outbox as the attempt that made it left it: the enhancement is not run again (it may
take minutes on a GPU, and what the admin looked at is what goes out).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info

from dicomnode.db import SpooledInstance
from dicomnode.errors import SpoolError
from dicomnode.spool import Spool
from dicomnode.status import JobPart, Replay


@dataclass(frozen=True)
class ReplaySelection:
    """What a replay sends: which inputs as they came (None: all of them), which outbox series."""

    inputs: frozenset[str] | None
    series: tuple[str, ...]


def replay_selection(
    part: JobPart, mode: Replay, outputs: dict[str, Any] | None, outbox: Sequence[str]
) -> ReplaySelection:
    """Pure: the selection for a job of `part` replaying in `mode`.

    `outputs` is what the last processing attempt recorded ({"outbox": its folder in the
    job's outbox; "series": every series it made, in sending order; "held": those QA held
    back; "hold": why; "unenhanced": inputs it sent as they came}); None for a job made before
    that record existed, which then sends its whole outbox.
    """
    if part == JobPart.ORIGINALS:
        return ReplaySelection(None, ())
    outputs = outputs or {}
    if mode == Replay.HELD:
        return ReplaySelection(frozenset(), tuple(outputs.get("held", outbox)))
    return ReplaySelection(
        frozenset(outputs.get("unenhanced", ())), tuple(outputs.get("series", outbox))
    )


def _spooled(path: Path) -> SpooledInstance:
    meta = read_file_meta_info(path)
    return SpooledInstance(
        str(meta.MediaStorageSOPInstanceUID),
        str(meta.MediaStorageSOPClassUID),
        str(meta.TransferSyntaxUID),
        path,
    )


def replay_outgoing(
    job_id: int,
    part: JobPart,
    mode: Replay,
    outputs: dict[str, Any] | None,
    inputs: list[SpooledInstance],
    spool: Spool,
) -> list[list[SpooledInstance]]:
    """The series to send, read from the job's inputs and outbox.

    SpoolError (not transient: nothing will bring them back) when an outbox series is gone.
    """
    attempt = (outputs or {}).get("outbox")  # None: made before attempts had folders
    outbox = spool.outbox_series(job_id, attempt)
    folder = spool.outbox_dir / str(job_id) / (attempt or "")
    selection = replay_selection(part, mode, outputs, list(outbox))
    outgoing: list[list[SpooledInstance]] = []
    chosen = [
        i for i in inputs if selection.inputs is None or i.sop_instance_uid in selection.inputs
    ]
    if chosen:
        outgoing.append(chosen)
    for series_uid in selection.series:
        files = outbox.get(series_uid)
        if not files:
            raise SpoolError(
                f"job {job_id}: series={series_uid} is gone from {folder}; "
                "it cannot be sent again (send the source series to the node again to make it anew)"
            )
        try:
            outgoing.append([_spooled(path) for path in files])
        except (OSError, ValueError) as exc:
            raise SpoolError(
                f"job {job_id}: cannot read the outbox series={series_uid}: {exc}"
            ) from exc
    return outgoing


def made_whole(details: dict[str, Any] | None, outbox: dict[str, list[Path]]) -> bool:
    """Whether `outbox` (series UID -> files) holds every derived image and metrics report the
    job's `details` name. A version before the outbox had a folder per attempt (2026-12-02)
    cleared the job's one folder and wrote it anew at each attempt, recording what it made
    only at the end: an attempt cut short left the last record beside a part of its files."""
    methods = (details or {}).get("methods") or []
    named = {image.get("sop") for method in methods for image in method.get("per_image") or []}
    named |= {method.get("report_sop_uid") for method in methods}
    named.discard(None)
    present = {path.stem for files in outbox.values() for path in files}
    return bool(named) and named <= present
