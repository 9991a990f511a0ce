"""The C-STORE SCU: one association per series per destination, every status checked.

Files are sent byte for byte when the peer accepts their transfer syntax (over plain TCP by our
send lane, `forward/send_lane.py`; over TLS by pynetdicom); otherwise they are decoded and sent
uncompressed in Explicit or Implicit VR Little Endian, whichever the peer takes: Implicit VR
Little Endian is the default syntax every SCP must accept (PS3.5 10.1), and some accept nothing
else.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from dicomnode.config import Destination, Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.bounded import read_bounded
from dicomnode.dicom.bounded_socket import refused_reason
from dicomnode.dicom.codestream import check_code_streams
from dicomnode.dicom.endian import little_endian
from dicomnode.dicom.lossy import lossy_history
from dicomnode.dicom.release import end
from dicomnode.dicom.tls import ClientContext, client_tls_args
from dicomnode.errors import (
    BrokenOff,
    ClassNotTaken,
    ConfigError,
    DecodeError,
    ForwardError,
    InstanceTooLarge,
    SpoolError,
)
from dicomnode.forward import send_lane
from dicomnode.forward.associate import open_association
from dicomnode.forward.outcome import (
    SOP_CLASS_NOT_SUPPORTED,
    Outcome,
    classify_store_status,
    no_response,
    status_text,
)
from dicomnode.forward.tally import SeriesTally, listed
from dicomnode.observe.counters import INSTANCES_FORWARDED
from dicomnode.spool import Spool

log = logging.getLogger(__name__)

# Send spooled files as raw bytes (no decode/re-encode) whenever the context matches exactly.
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class SendReport:
    stored: tuple[str, ...]  # the SOP Instance UIDs the peer took
    warnings: int
    seconds: float

    @property
    def sent(self) -> int:
        return len(self.stored)


def contexts_for(instances: Sequence[SpooledInstance]) -> list[PresentationContext]:
    """Only what the series needs: each stored (class, syntax) pair, plus an uncompressed
    fallback per class (Explicit, then Implicit VR Little Endian: a PACS that takes only the
    default syntax gets Explicit VR files too, converted)."""
    syntaxes: dict[str, set[str]] = defaultdict(set)
    for item in instances:
        syntaxes[item.sop_class_uid].add(item.transfer_syntax_uid)
    contexts = []
    for sop_class, stored in sorted(syntaxes.items()):
        contexts.extend(build_context(sop_class, [ts]) for ts in sorted(stored))
        if stored != {ImplicitVRLittleEndian}:  # Implicit's own context is its fallback
            contexts.append(build_context(sop_class, list(_UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        raise ForwardError(
            f"series needs {len(contexts)} presentation contexts, more than the {MAX_CONTEXTS} "
            "one association can carry",
            transient=False,
        )
    return contexts


def _client_tls(
    destination: Destination, settings: Settings, where: str
) -> tuple[ClientContext, str] | None:
    """The association's TLS arguments; a TLS file that went bad since start fails the delivery."""
    try:
        return client_tls_args(destination, settings.destination_key(destination))
    except ConfigError as exc:
        raise ForwardError(f"cannot set up TLS to {where}: {exc}", transient=True) from None


def _associate(
    destination: Destination,
    settings: Settings,
    contexts: list[PresentationContext],
    ext_neg: list[Any] | None = None,
    handlers: Sequence[tuple[Any, ...]] = (),
) -> Association:
    """An association that carries `contexts` (plus `ext_neg` items, e.g. a role selection,
    and `handlers` for what the peer sends on it); a ForwardError says why there is none."""
    where = destination.described
    tls_args = _client_tls(destination, settings, where)
    return open_association(destination, settings, contexts, where, tls_args, ext_neg, handlers)


def _accepted_context(assoc: Association, sop_class: str, syntax: str) -> int | None:
    """The ID of an accepted presentation context for `sop_class` in `syntax`, if any."""
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax:
            return cx.context_id
    return None


def _send_one(assoc: Association, item: SpooledInstance, max_bytes: int, message_id: int) -> int:
    """Send one instance and return the peer's status (ForwardError when there is none).

    A spooled file that cannot be read (gone, unreadable, no longer DICOM) is a SpoolError that
    names the instance and the file: the fault is ours, not the peer's.
    """
    try:
        return _store(assoc, item, max_bytes, message_id)
    except (OSError, InvalidDicomError) as exc:
        raise SpoolError(
            f"cannot read the spooled file of sop={item.sop_instance_uid} ({item.path}): {exc}"
        ) from None


def _store(assoc: Association, item: SpooledInstance, max_bytes: int, message_id: int) -> int:
    """The C-STORE itself: the file as it is when the peer takes its syntax, else decoded."""
    context_id = _accepted_context(assoc, item.sop_class_uid, item.transfer_syntax_uid)
    if context_id is not None and send_lane.usable(assoc):
        return send_lane.send_file(assoc, context_id, item, message_id)
    if context_id is not None:  # pynetdicom sends: TLS, or an association the lane cannot use
        started = time.monotonic()
        try:
            response = assoc.send_c_store(item.path, msg_id=message_id)
        except AttributeError as exc:  # pynetdicom: the file lacks its file meta information
            raise InvalidDicomError(str(exc)) from None
    elif any(_accepted_context(assoc, item.sop_class_uid, ts) is not None for ts in _UNCOMPRESSED):
        dataset = _uncompressed(item, max_bytes)
        started = time.monotonic()  # after decoding: only the peer's wait is judged a timeout
        response = assoc.send_c_store(dataset, msg_id=message_id)
    elif not any(cx.abstract_syntax == item.sop_class_uid for cx in assoc.accepted_contexts):
        raise ClassNotTaken(
            f"no presentation context for SOP class {item.sop_class_uid} "
            f"(sop={item.sop_instance_uid})"
        )
    else:
        raise ForwardError(
            f"peer accepted no transfer syntax we can send sop={item.sop_instance_uid} in "
            f"(SOP class {item.sop_class_uid})",
            transient=False,
        )
    if "Status" not in response:
        timeout = assoc.dimse_timeout
        timed_out = timeout is not None and time.monotonic() - started >= timeout
        refused = refused_reason(assoc)
        raise no_response(item.sop_instance_uid, timeout, timed_out=timed_out, refused=refused)
    return int(response.Status)


def _uncompressed(item: SpooledInstance, max_bytes: int) -> Dataset:
    """The instance for the uncompressed fallback: decoded, or turned little endian; pynetdicom
    converts between Explicit and Implicit VR Little Endian itself.

    Reads at most `max_bytes` (node.max_instance_mb), inflated size included: a spooled deflate
    bomb is refused, not expanded.
    """
    try:
        dataset = read_bounded(item.path, max_bytes)
    except (InstanceTooLarge, DecodeError) as exc:
        raise ForwardError(
            f"cannot decode sop={item.sop_instance_uid} for the uncompressed fallback: {exc}",
            transient=False,
        ) from None
    syntax = UID(item.transfer_syntax_uid)
    if not syntax.is_little_endian:  # Explicit VR Big Endian (retired): pynetdicom keeps it
        return little_endian(dataset)
    if syntax.is_compressed:
        lossy = Dataset()  # what tells a viewer it was lossy once its syntax no longer does
        if dataset.get("LossyImageCompression") != "01":
            lossy_history(lossy, dataset)
        compressed_bytes = len(dataset.PixelData)
        try:
            check_code_streams(dataset)  # a stream larger than its header says: not decoded
            # The same instance, decoded: pydicom would give it a new SOP Instance UID.
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:  # each decoder fails in its own way; none will heal
            raise ForwardError(
                f"cannot decompress sop={item.sop_instance_uid} for the uncompressed "
                f"fallback: {type(exc).__name__}: {exc}",
                transient=False,
            ) from None
        if "LossyImageCompressionMethod" in lossy and compressed_bytes:
            # Type 1C with the method in enhanced IODs; what this stream achieved.
            ratio = len(dataset.PixelData) / compressed_bytes
            lossy.LossyImageCompressionRatio = f"{ratio:.2f}"
        dataset.update(lossy)  # PS3.3 C.7.6.1.1.5: once lossy, marked so for good
    return dataset


def send_series(
    job_id: int,
    destination: Destination,
    instances: Sequence[SpooledInstance],
    settings: Settings,
    *,
    stored_earlier: int = 0,
) -> SendReport:
    """Deliver a series over one association; raise ForwardError (transient or not) on failure.
    `stored_earlier`: instances of the series the peer stored on an earlier attempt (not in
    `instances`; the error counts them).

    The series goes on past an instance the peer does not take (refused for good, "try later",
    an association it ended, a spooled file of ours that cannot be read) and stops only when the
    peer itself is failing (`forward/tally.py`); the one error at the end names each problem.
    A timeout or a peer that cannot be reached again stops it at once.
    """
    started = time.monotonic()
    contexts = contexts_for(instances)
    assoc = _associate(destination, settings, contexts)
    tally = SeriesTally(len(instances), earlier=stored_earlier)
    try:
        for number, item in enumerate(instances):
            tally.tried = number + 1
            # Each request its own Message ID (US, 1-65535), as DCMTK and Orthanc number them:
            # a PACS's log tells the requests of one association apart.
            message_id = number % 0xFFFF + 1
            try:
                status = _send_one(assoc, item, settings.node.max_instance_bytes, message_id)
            except SpoolError as exc:
                tally.unread(str(exc))
                if not assoc.is_established:  # broken off mid-message, the association with it
                    break
                continue
            except BrokenOff as exc:
                # The peer ended the association on this instance. If it takes a new one (else
                # ForwardError: it is down), the series' other instances go on it.
                if tally.break_off(str(exc)):
                    break
                log.warning(
                    "destination broke off the association job=%d destination=%s sop=%s: "
                    "going on with the series' other instances on a new one",
                    job_id,
                    destination.name,
                    item.sop_instance_uid,
                )
                end(assoc)
                assoc = _associate(destination, settings, contexts)
                continue
            except ClassNotTaken as exc:  # the peer's refusal, told at association
                tally.refuse(str(exc), class_refused=True)
                continue
            except ForwardError as exc:  # ours: no syntax the peer took fits (a video, a
                if exc.transient:  # file that will not decode); or no answer at all
                    raise
                tally.cannot_send(str(exc))
                continue
            outcome = classify_store_status(status)
            problem = f"{status_text(status)} for sop={item.sop_instance_uid}"
            if outcome is Outcome.TRANSIENT:
                if tally.defer(problem):
                    break
            elif outcome is Outcome.PERMANENT:
                tally.refuse(problem, class_refused=status == SOP_CLASS_NOT_SUPPORTED)
            else:
                remark = problem if outcome is Outcome.WARNING else None
                tally.stored(item.sop_instance_uid, remark)
    except ForwardError as exc:
        raise tally.ending(exc) from None
    finally:
        end(assoc)
        for outcome_name, count in tally.outcomes().items():
            if count:
                INSTANCES_FORWARDED.labels(destination.name, outcome_name).inc(count)
    failure = tally.error()
    if failure is not None:
        raise failure
    seconds = time.monotonic() - started
    log.info(
        "forwarded job=%d destination=%s series=%s instances=%d warnings=%d seconds=%.2f%s",
        job_id,
        destination.name,
        Spool.series_uid_of(instances[0].path),  # a derived job sends its images, then its SR
        tally.sent,
        tally.warnings,
        seconds,
        f": {listed(tally.remarks)}" if tally.remarks else "",  # what the PACS remarked
    )
    return SendReport(tuple(tally.delivered), tally.warnings, seconds)
