"""One job's enhancement: load the series, run each method, measure, write derived series + SR.

For every configured method the job gets one derived series (same study, new deterministic UIDs)
and one metrics report, written to the spool's outbox before anything is forwarded. Each method
runs self-check → enhance (each image measured, derived and stored beside it) → report →
summarise. Images that cannot be enhanced (colour, float, undecodable, blank, ...) are listed
with their reason and still go out unchanged with the originals.
What happened is returned as a `SeriesOutcome` record (device, model, timings, metrics per image
and per method); its `as_dict()` is the job's `details`.
"""

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import CTImageStorage

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.conformance import required_empty_keywords
from dicomnode.dicom.derive import derived_instance_uid, processed_by_dicomnode
from dicomnode.errors import SeriesTooLarge
from dicomnode.imaging.enhance import Method, SrcnnMethod, enhance_stack
from dicomnode.imaging.outcome import (
    DONE,
    NOTHING_DERIVED,
    DeclinedImage,
    ImageOutcome,
    MethodOutcome,
    SeriesOutcome,
    StageTimings,
    mean_gain,
)
from dicomnode.pipeline.derived_output import (
    DerivedImage,
    ImageStore,
    Sink,
    StoredImage,
    derivation_for,
    derive_image,
    write_derived_series,
)
from dicomnode.pipeline.methods import qa_thresholds
from dicomnode.pipeline.scoring import (
    ScoredSources,
    scorable,
    score,
    self_check_gains,
)
from dicomnode.pipeline.sources import SourceImage, load_sources, modality_in, series_header

log = logging.getLogger(__name__)

# Enhanced outputs waiting to be finished, at most (the enhancement pauses beyond it).
MAX_BYTES_WAITING_TO_FINISH = 256 * 2**20
# Source pixels in one call of a method that sets no batch of its own (the baseline, SRCNN on
# tiled images): ~21 bytes each of working copies (~8 more when SRCNN averages views: a view's
# output and the sum), ~90-120 MB, whatever the series' length.
STACK_PIXELS = 2**22


@dataclass(frozen=True)
class SeriesOutput:
    """What the job forwards after the originals, and the record of what was done."""

    # Per method: its derived series and its report, in the order they are to be sent.
    by_method: dict[str, list[list[SpooledInstance]]]
    outcome: SeriesOutcome
    # Source instances no derived image stands for (undecodable, or the series not enhanced).
    unenhanced: set[str] = field(default_factory=set)


def _stacks(images: list[SourceImage], method: Method) -> Iterator[list[int]]:
    """The images enhanced by one call each: per frame shape, SRCNN's batch at a time (so the
    batches, and the outputs, are those of one call per shape), else STACK_PIXELS' worth."""
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, source in enumerate(images):
        by_shape[source.image.values.shape[1:]].append(index)
    for shape, indices in by_shape.items():
        per_pass = method.runner.images_per_pass(shape) if isinstance(method, SrcnnMethod) else None
        per_pass = per_pass or max(1, STACK_PIXELS // (shape[0] * shape[1]))
        stack: list[int] = []
        for index in indices:
            stack.append(index)
            if sum(len(images[i].image.values) for i in stack) >= per_pass:
                yield stack
                stack = []
        if stack:
            yield stack


def _enhance_all(
    images: list[SourceImage], method: Method, enhanced: Callable[[int, np.ndarray], None]
) -> None:
    """Enhance every image, a stack at a time (`_stacks`), telling `enhanced(index, output)` of
    each as soon as its stack is done, so it can be finished while the next one runs; the
    outputs are not kept here.

    The series' modality (its first image's) decides the working range for all of them; each
    image's own polarity turns it or not (MONOCHROME1)."""
    modality = images[0].modality or "OT"
    for indices in _stacks(images, method):
        stack = np.concatenate([images[i].image.values for i in indices])
        padding = np.concatenate([images[i].image.padding for i in indices])
        inverted = [
            images[i].image.domain.inverted for i in indices for _ in images[i].image.values
        ]
        result = enhance_stack(stack, modality, method, padding=padding, inverted=inverted).values
        start = 0
        for i in indices:
            frames = len(images[i].image.values)
            enhanced(i, result[start : start + frames])
            start += frames


class _Waiting:
    """Bytes of enhanced outputs not yet finished. On a small machine SRCNN outruns the one
    finishing thread, and each output waits as float32 (four times its source's pixels at a
    scale of 2): the enhancement pauses while the next output would take the backlog past
    `limit`, so a long series never holds all its outputs in memory at once (their encoded
    files wait for the disk within `ImageStore`'s own bound)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._bytes = 0
        self._changed = threading.Condition()

    def add(self, size: int) -> None:
        """Count an output of `size` bytes in, once it fits (alone, it always does)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._bytes or self._bytes + size <= self._limit)
            self._bytes += size

    def remove(self, size: int) -> None:
        with self._changed:
            self._bytes -= size
            self._changed.notify_all()


class _Stopwatch:
    """Seconds per stage, for the job's timings."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


Finished = Future[StoredImage] | DeclinedImage | None


def _stored(finished: Finished) -> StoredImage | DeclinedImage | None:
    return finished.result() if isinstance(finished, Future) else finished


def _run_method(
    images: list[SourceImage],
    scored: ScoredSources,
    method: Method,
    settings: Settings,
    sink: Sink,
    earlier_reports: Mapping[str, Sequence[str]],
) -> tuple[list[list[SpooledInstance]], MethodOutcome | None, list[DeclinedImage]]:
    """self-check → enhance (each image scored, derived and stored beside it) → report, for
    one method on the whole series.

    The self-check's images are restored first; a second thread then scores them while the
    enhancement runs, and before any image is finished, so that the gains are known when an
    image's derived image is built (they are in its ImageComments). As soon as a stack of
    images is enhanced, that thread scores each (fidelity, QA) and derives and encodes its
    DICOM image while the next stack runs (TensorFlow releases the interpreter), and the float
    output is let go; a third thread stores each encoded image (`ImageStore`). Stages:
    `measure_s` the self-check's restoration (its scoring is in the next stage); `enhance_s`
    the enhancement with what runs beside it; `write_s` what is left after it: the last
    images, the report and storing it."""
    clock = _Stopwatch()
    derivation = derivation_for(images, method, settings)
    thresholds = qa_thresholds(settings.qa)
    # One thread, first in first out: the self-check's scores come before any image's.
    finishing = ThreadPoolExecutor(1, thread_name_prefix="finish")
    waiting = _Waiting(MAX_BYTES_WAITING_TO_FINISH)
    store = ImageStore(sink)

    derived: dict[int, Future[Finished]] = {}
    written = None
    try:
        with clock.stage("measure_s"):
            gains = self_check_gains(images, scored, method, settings, finishing)

        def finish(index: int, output: np.ndarray) -> Finished:
            try:
                if gains.exception() is not None:  # the job ends with it: nothing to finish
                    return None
                source = images[index]
                fidelity, verdict = score(scored[index], output, thresholds)
                sop = derived_instance_uid(derivation.uid_root, source.sop, method.version)
                multi_frame = len(source.image.values) > 1
                checked = gains.result()[index]
                measured = ImageOutcome(
                    source.sop,
                    sop,
                    fidelity,
                    mean_gain(checked),
                    verdict,
                    scored_frame=scored[index].frame if multi_frame else None,
                    self_check_frames=checked if len(checked) > 1 else (),
                )
                image = derive_image(source, output, measured, method, derivation)
                return store.put(image) if isinstance(image, DerivedImage) else image
            finally:
                waiting.remove(output.nbytes)

        def enhanced(index: int, output: np.ndarray) -> None:
            if gains.done():
                gains.result()  # a self-check that failed ends the enhancement here
            waiting.add(output.nbytes)
            # In this thread's context: a library's warning while deriving names the job.
            derived[index] = finishing.submit(copy_context().run, finish, index, output)

        with clock.stage("enhance_s"):
            _enhance_all(images, method, enhanced)
        with clock.stage("write_s"):
            gains.result()  # it succeeded, so every image was finished (none is None)
            finished = [_stored(derived[index].result()) for index in range(len(images))]
            store.close()
            written, declined = write_derived_series(
                [image for image in finished if image is not None],
                method,
                derivation,
                settings,
                sink,
                earlier_reports,
            )
    finally:
        finishing.shutdown(cancel_futures=True)
        if written is None:  # failed, or its report could not be built: nothing of it goes
            store.discard()
    if written is None:
        return [], None, declined
    outcome = MethodOutcome(
        method=method.name,
        version=method.version,
        model_sha256=method.model_sha256,
        scale=method.scale,
        device=method.device,
        derived_series_uid=derivation.series_uid,
        report_series_uid=written.report_series_uid,
        report_sop_uid=written.report.sop_instance_uid,
        images=written.measured,
        timings=StageTimings(**clock.seconds),
    )
    return [written.images, [written.report]], outcome, declined


def prepare_enhancement() -> None:
    """What the first job would pay once, paid when a node starts: the tables of the standard
    that decide what a derived image must carry (highdicom reads them: ~0.6 s). Importing this
    module has already imported the measuring and DICOM-writing libraries."""
    required_empty_keywords(CTImageStorage)


@dataclass(frozen=True)
class LoadedSeries:
    """A job's source images read and decoded (`load_series`) that have something to enhance,
    the reasons of those that cannot be read or are blank, the seconds it took, and what is
    measured of each source (`scored`: filled as the methods need it, or ahead of them)."""

    images: list[SourceImage]
    declined: tuple[DeclinedImage, ...]
    seconds: float
    scored: ScoredSources
    not_enhanced: str = ""  # why the series is not enhanced at all (its modality, its size)

    def measure_ahead(self, settings: Settings, until: threading.Event) -> int:
        """Prepare the self-check (in a second thread) and measure the sources for QA until
        `until` is set, when the series will be enhanced; return how many sources were measured.

        A worker runs it while the series' originals have their head start, when the cores are
        not both busy. The self-check's degradation (~30 ms per 512² image at x1) would
        otherwise hold up the enhancement, and the rest (bicubic scored for the self-check, ~9
        ms per source measured for QA) would be done beside it, where both cores are busy."""
        if not self.images or self.images[0].modality not in settings.enhance.modalities:
            return 0
        enhance = settings.enhance
        if not enhance.self_check:
            return self.scored.measure_sources(until)
        with ThreadPoolExecutor(1, thread_name_prefix="self-check-ahead") as helper:
            prepared = helper.submit(
                self.scored.prepare_self_check, until, enhance.scale, enhance.self_check_images
            )
            measured = self.scored.measure_sources(until)
            prepared.result()
        return measured


def load_series(inputs: list[SpooledInstance], settings: Settings) -> LoadedSeries:
    """The first stage of `enhance_series`, which a worker may run ahead of it (while the
    series' originals are being sent). A series of a modality not enabled is not read, one
    past enhance.max_series_mb not further than its first image past it: `not_enhanced` says
    why."""
    started = time.perf_counter()
    limits = settings.node.max_instance_bytes, settings.enhance.max_series_bytes
    header = series_header(inputs, limits[0])
    modality = None if header is None else modality_in(header)
    if modality is not None and modality not in settings.enhance.modalities:
        return _not_enhanced(_not_enabled(modality), started)
    if header is not None and processed_by_dicomnode(header):
        return _not_enhanced(DERIVED_BY_DICOMNODE, started)
    try:
        loaded, unreadable = load_sources(inputs, *limits)
    except SeriesTooLarge as exc:
        return _not_enhanced(str(exc), started)
    images, unscorable = scorable(loaded, settings.enhance.scale)
    seconds = time.perf_counter() - started
    return LoadedSeries(images, unreadable + unscorable, seconds, ScoredSources(images))


def _not_enhanced(reason: str, started: float) -> LoadedSeries:
    seconds = time.perf_counter() - started
    return LoadedSeries([], (), seconds, ScoredSources([]), not_enhanced=reason)


def enhance_series(
    job_id: int,
    inputs: list[SpooledInstance],
    settings: Settings,
    methods_for: Callable[[str], list[Method]],
    sink: Sink,
    loaded: LoadedSeries | None = None,
    earlier_reports: Mapping[str, Sequence[str]] | None = None,
) -> SeriesOutput:
    """Derived series and reports for every method (`methods_for(modality)`: the modality's own
    models where there are any), each file handed to `sink` to store; `loaded`: `inputs`
    already loaded by `load_series`; `earlier_reports`: the reports made for the series before,
    by report series (`db.jobs.reports_made_before`), which the new ones name as replaced."""
    loaded = loaded or load_series(inputs, settings)
    images, declined, load_s = loaded.images, loaded.declined, loaded.seconds
    everything = {item.sop_instance_uid for item in inputs}
    if loaded.not_enhanced:
        outcome = SeriesOutcome(f"skipped: {loaded.not_enhanced}", load_s, declined)
        return SeriesOutput({}, outcome, everything)
    if not images:
        status = "skipped: no image in the series can be enhanced"
        return SeriesOutput({}, SeriesOutcome(status, load_s, declined), _sops(declined))
    modality = images[0].modality
    if modality not in settings.enhance.modalities:  # its first header did not read
        status = f"skipped: {_not_enabled(modality)}"
        return SeriesOutput({}, SeriesOutcome(status, load_s, declined), everything)
    files: dict[str, list[list[SpooledInstance]]] = {}
    outcomes: list[MethodOutcome] = []
    for method in methods_for(modality):
        # Each source is measured once, by the first method (or ahead of it): the others reuse it.
        series, outcome, left_out = _run_method(
            images, loaded.scored, method, settings, sink, earlier_reports or {}
        )
        declined += tuple(left_out)
        if outcome is None:
            log.warning(
                "no derived image job=%d method=%s series=%s: %s",
                job_id,
                method.name,
                images[0].dataset.SeriesInstanceUID,
                first_declined(left_out, job_id),
            )
            continue
        files[method.name] = series
        outcomes.append(outcome)
        log.info(
            "enhanced job=%d method=%s derived_series=%s images=%d psnr=%.2f ssim=%.4f qa=%s "
            "device=%s",
            job_id,
            method.name,
            outcome.derived_series_uid,
            len(outcome.images),
            outcome.psnr_mean_db or float("nan"),
            outcome.ssim_mean,
            outcome.qa,
            outcome.device,
        )
    loaded.scored.forget_self_checks()
    status = DONE if outcomes else NOTHING_DERIVED
    # With several methods, an image declined by one may stand derived by another; it still
    # counts as unenhanced, so with originals off its source goes out rather than nothing.
    result = SeriesOutcome(status, load_s, declined, tuple(outcomes))
    return SeriesOutput(files, result, _sops(declined))


# A series a dicomnode derived, sent back (a PACS routing every CT here, a study sent again
# whole): enhancing it again would make a derived series of a derived series each time.
DERIVED_BY_DICOMNODE = "derived by dicomnode (a series it made, sent back): not enhanced again"


def _not_enabled(modality: str) -> str:
    return f"modality {modality or '(none)'} not enabled"


def first_declined(declined: Sequence[DeclinedImage], job_id: int) -> str:
    """A log line's account of images declined: how many, the first one's reason (each names
    its instance) and where the others' are."""
    if not declined:
        return "0 declined"
    first = f"{len(declined)} declined, the first {declined[0].reason}"
    more = f" (all: `dicomnode jobs show {job_id}`)" if len(declined) > 1 else ""
    return first + more


def _sops(declined: tuple[DeclinedImage, ...]) -> set[str]:
    return {item.sop for item in declined}
