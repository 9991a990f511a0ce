"""What a job measures of its images, the same for every method: the frame each image is scored
on, which images are blank, what QA measures of each source (once per job), the self-check's
gains and each output's fidelity and QA verdict (`pipeline.enhancement` runs them)."""

import logging
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from dicomnode.config import Settings
from dicomnode.imaging.degrade import Degradation, resample
from dicomnode.imaging.enhance import Method, enhance_stack
from dicomnode.imaging.metrics import (
    SSIM_WINDOW,
    DegradedForSelfCheck,
    ImageMetrics,
    border_shave,
    compare,
    data_range_of,
    sampled_indices,
    scored_region,
)
from dicomnode.imaging.normalize import fill_padding
from dicomnode.imaging.outcome import DeclinedImage, FrameGain, reported, reported_fidelity
from dicomnode.imaging.qa import (
    QaThresholds,
    QaVerdict,
    SourceQa,
    assess_against,
    measure_source,
    merged,
)
from dicomnode.pipeline.sources import SourceImage

log = logging.getLogger(__name__)


def _on_source_grid(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return output if output.shape == shape else resample(output, shape)


def frame_of(source: SourceImage, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame of an image and the mask of its pixels left out of its scores."""
    return source.image.values[frame], source.image.padding[frame]


def scored_frame(source: SourceImage) -> tuple[np.ndarray, np.ndarray]:
    """The frame an image is scored on (`SourceImage.scored_frame`) and the mask of pixels left
    out of its scores."""
    return frame_of(source, source.scored_frame)


def _too_small(scale: int) -> str:
    """Why an image is too small to score at `scale`, with the size it would need."""
    shave = border_shave(scale)
    need = -(-(SSIM_WINDOW + 2 * shave) // scale) * scale  # a multiple of the scale
    reason = (
        f"too small to score at scale {scale}: SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window "
        f"needs at least {need}x{need} pixels"
    )
    return reason + (
        f" (the scores leave out a {shave}-pixel border at scale {scale})" * bool(shave)
    )


def scorable(
    images: list[SourceImage], scale: int
) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    """The images that can be enhanced and scored at `scale`, and the reason of each one that
    cannot: too small for SSIM's window once the scores' border is left out
    (`scored_region`), or blank there (every pixel, padding aside, of one value: nothing to
    enhance, PSNR and SSIM undefined). Such an image goes out as it came, with the originals;
    one in a series does not keep the others from being enhanced."""
    kept, declined = [], []
    for source in images:
        reference, padding = scored_frame(source)
        region = scored_region(reference, scale)
        if min(region.shape) < SSIM_WINDOW:
            rows, columns = reference.shape
            reason = f"sop={source.sop}: {columns}x{rows} pixels, {_too_small(scale)}"
        elif data_range_of(region, scored_region(padding, scale)) > 0:
            kept.append(source)
            continue
        else:
            reason = (
                f"sop={source.sop}: blank: every pixel (padding aside) has the same value, "
                "so there is nothing to enhance and PSNR/SSIM are undefined"
            )
        declined.append(DeclinedImage(source.sop, reason))
    return kept, tuple(declined)


SelfCheckFrame = tuple[int, int]  # (image index in the series, frame index in the image)


def self_check_frames(images: list[SourceImage], limit: int) -> list[SelfCheckFrame]:
    """The frames the self-check restores: at most `limit` in all (0: every image, a
    multi-frame one on up to QA_FRAMES of its frames).

    The images are spread evenly over the series (`sampled_indices`), one frame each (its
    scored frame) when the series has `limit` images or more. A series of fewer images gives
    each its share of the limit (the first ones one more, for what does not divide), spread
    over its frames and passing over blank ones: a multi-frame image is judged by many frames,
    each counted as an image of a series is (the mean gain, and each frame against the
    per-image floor), not by its middle frame alone, which let a method that ruined the other
    frames pass.
    """
    chosen = sampled_indices(len(images), limit)
    sample: list[SelfCheckFrame] = []
    for place, index in enumerate(chosen):
        source = images[index]
        share = QA_FRAMES if limit <= 0 else limit // len(chosen) + (place < limit % len(chosen))
        count = len(source.image.values)
        if count == 1 or share <= 1:
            sample.append((index, source.scored_frame))
            continue
        frames = [f for f in sampled_indices(count, share) if not source.is_blank(f)]
        sample += [(index, frame) for frame in frames or [source.scored_frame]]
    return sample


# Frames of a multi-frame image QA also judges besides the scored one, spread evenly: an XA run
# whose first frames a method ruined was "QA ok" by its middle frame and went to the PACS.
QA_FRAMES = 16


@dataclass(frozen=True)
class ScoredSource:
    """An image's scored frame, its padding, and what QA measures of it, plus what QA measures
    of the other frames it judges (frame index, measures): the same for every method."""

    reference: np.ndarray
    padding: np.ndarray
    qa: SourceQa
    other_frames: tuple[tuple[int, SourceQa], ...] = ()
    frame: int = 0  # the frame scored (`SourceImage.scored_frame`)


def scored_source(source: SourceImage) -> ScoredSource:
    scored = source.scored_frame
    reference, padding = scored_frame(source)
    domain = source.image.domain
    low, high = sorted(
        (
            domain.stored_min * domain.slope + domain.intercept,
            domain.stored_max * domain.slope + domain.intercept,
        )
    )
    # A MONOCHROME1 image's body is its low values; CT's is high HU however it is displayed.
    inverted = domain.inverted and source.modality != "CT"

    def measured(frame: int) -> SourceQa:
        return measure_source(
            source.image.values[frame],
            limits=(low, high),
            padding=source.image.padding[frame],
            step=domain.slope,
            inverted=inverted,
        )

    frames = len(source.image.values)
    others = tuple(
        (frame, measured(frame)) for frame in sampled_indices(frames, QA_FRAMES) if frame != scored
    )
    return ScoredSource(reference, padding, measured(scored), others, scored)


class ScoredSources:
    """What a job measures of its sources whatever the method: each image's `ScoredSource`, and
    the self-check's sample degraded at a scale (`for_self_check`). Each is made the first time
    a method asks for it (once per job), or ahead of it (`prepare_self_check`,
    `measure_sources`). The self-check's part and the sources' part may each be made by a
    thread of its own, at the same time."""

    def __init__(self, images: list[SourceImage]) -> None:
        self._images = images
        self._scored: dict[int, ScoredSource] = {}
        self._self_checks: dict[
            tuple[int, int], tuple[list[SelfCheckFrame], DegradedForSelfCheck]
        ] = {}

    def __getitem__(self, index: int) -> ScoredSource:
        if index not in self._scored:
            self._scored[index] = scored_source(self._images[index])
        return self._scored[index]

    def for_self_check(
        self, scale: int, limit: int
    ) -> tuple[list[SelfCheckFrame], DegradedForSelfCheck]:
        """The frames of the self-check's sample (`self_check_frames`) and those frames,
        padding filled, degraded at `scale`."""
        if (scale, limit) not in self._self_checks:
            modality = self._images[0].modality or "OT"
            chosen = self_check_frames(self._images, limit)
            frames = [frame_of(self._images[i], f) for i, f in chosen]
            inverted = [self._images[i].image.domain.inverted for i, _ in chosen]
            degraded = DegradedForSelfCheck(
                [
                    fill_padding(reference, padding, modality, inverted=turned)
                    for (reference, padding), turned in zip(frames, inverted, strict=True)
                ],
                Degradation(scale=scale),
                [padding for _, padding in frames],
            )
            self._self_checks[scale, limit] = chosen, degraded
        return self._self_checks[scale, limit]

    def forget_self_checks(self) -> None:
        """Let the self-checks' images go: every method has been checked."""
        self._self_checks.clear()

    def prepare_self_check(self, until: threading.Event, scale: int, limit: int) -> None:
        """`for_self_check(scale, limit)` degraded and bicubic scored, image by image until
        `until` is set.

        Work ahead never fails a job: what raises here is left for the job to do, and to fail
        at, as it would have without it."""
        try:
            if not until.is_set():
                _, degraded = self.for_self_check(scale, limit)
                degraded.prepare(until)
        except Exception:
            log.debug("self-check not prepared ahead", exc_info=True)

    def measure_sources(self, until: threading.Event) -> int:
        """Measure the images in order until `until` is set (checked between images) or all
        are; return how many this measured. An image that raises ends it (see
        `prepare_self_check`)."""
        measured = 0
        for index in range(len(self._images)):
            if until.is_set():
                break
            if index in self._scored:
                continue
            try:
                self[index]  # measures it and keeps it
            except Exception:
                log.debug("source %d not measured ahead", index, exc_info=True)
                break
            measured += 1
        return measured


def self_check_gains(
    images: list[SourceImage],
    scored: ScoredSources,
    method: Method,
    settings: Settings,
    scoring: Executor,
) -> Future[list[tuple[FrameGain, ...]]]:
    """The method's self-check gain on each checked frame, per image (empty where not
    checked): the sample of `self_check_frames`, restored here by one batched call per image
    shape, then scored in `scoring` (beside whatever runs here next)."""
    if not settings.enhance.self_check:
        unchecked: Future[list[tuple[FrameGain, ...]]] = Future()
        unchecked.set_result([()] * len(images))
        return unchecked
    modality = images[0].modality or "OT"
    chosen, degraded = scored.for_self_check(method.scale, settings.enhance.self_check_images)
    inverted = [images[i].image.domain.inverted for i, _ in chosen]
    restored = degraded.restored_by(
        lambda stack, sample: (
            enhance_stack(stack, modality, method, inverted=[inverted[i] for i in sample]).values
        )
    )

    def gains() -> list[tuple[FrameGain, ...]]:
        per_image: list[list[FrameGain]] = [[] for _ in images]
        for (index, frame), check in zip(chosen, restored.scored(), strict=True):
            per_image[index].append(FrameGain(frame, reported(check.gain_db)))
        return [tuple(frames) for frames in per_image]

    return scoring.submit(gains)


def score(
    scored: ScoredSource, output: np.ndarray, thresholds: QaThresholds
) -> tuple[ImageMetrics, QaVerdict]:
    """Fidelity of one output (the scored frame of a multi-frame image) against its source,
    and its QA verdict: the scored frame's measures, and the worst verdict of the frames QA
    judges, each other frame's reasons named by its number."""
    shape = scored.reference.shape
    result = _on_source_grid(output[scored.frame], shape)
    fidelity = reported_fidelity(compare(scored.reference, result, padding=scored.padding))
    verdict = assess_against(scored.qa, result, thresholds)
    named = f"frame {scored.frame + 1} of {len(output)}: " if scored.other_frames else ""
    frames = [(named, verdict)]
    for frame, qa in scored.other_frames:
        other = assess_against(qa, _on_source_grid(output[frame], shape), thresholds)
        frames.append((f"frame {frame + 1} of {len(output)}: ", other))
    worst, reasons = merged(frames)
    return fidelity, QaVerdict(worst, reasons, verdict.measures)
