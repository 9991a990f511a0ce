"""What an enhancement did to one series: frozen records, built once, read by everyone.

`ImageOutcome` (one derived image: fidelity, self-check, QA), `MethodOutcome` (one method on one
series: where it ran, which model, how long, and the images) and `SeriesOutcome` (the whole job's
enhancement: what was loaded, what was declined, every method) are what the metrics SR, the
offline writer, `dicomnode enhance` and `dicomnode jobs show` read. `as_dict()` is the job's
`details` JSON, a documented contract; `SeriesOutcome.from_dict` reads it back.

Reported numbers carry `DIGITS` decimals, rounded once where they are measured, so the image's
comment, the SR, the JSON and the series means all agree to the last digit.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from dicomnode.imaging.metrics import ImageMetrics, SeriesMetrics, mean_interval, summarize
from dicomnode.imaging.qa import MEASURES as QA_MEASURES
from dicomnode.imaging.qa import QaVerdict, Verdict, worst_verdict

DIGITS = 4
DONE = "done"
NOTHING_DERIVED = "skipped: no derived image could be built (see skipped)"
TOO_LARGE = "too large to enhance"  # begins the reason of a series past enhance.max_series_mb


def self_check_reference(scale: int) -> str:
    """What the self-check's gain is over: at x2-4 the cubic upsampling of the degraded image,
    at x1 the degraded image itself (no upsampling: calling it bicubic misled)."""
    return "bicubic" if scale > 1 else "the degraded input"


def reported(value: float) -> float:
    """A measured number at the precision every report uses."""
    return round(value, DIGITS)


def reported_fidelity(metrics: ImageMetrics) -> ImageMetrics:
    return replace(metrics, psnr_db=reported(metrics.psnr_db), ssim=reported(metrics.ssim))


def _mean(values: list[float]) -> float | None:
    return reported(float(np.mean(values))) if values else None


@dataclass(frozen=True)
class FrameGain:
    """The self-check's gain on one frame of a multi-frame image (`frame`: 0-based)."""

    frame: int
    gain_db: float


def mean_gain(frames: tuple[FrameGain, ...]) -> float | None:
    """An image's self-check gain: the mean over its frames checked (None: not checked)."""
    return _mean([frame.gain_db for frame in frames])


@dataclass(frozen=True)
class ImageOutcome:
    """One derived image: how far it is from its source, the self-check and the QA verdict."""

    source_sop: str
    sop: str  # the derived image's SOP Instance UID
    fidelity: ImageMetrics  # against the source, on the source grid
    self_check_gain_db: float | None  # None: self-check off
    qa: QaVerdict
    scored_frame: int | None = None  # of a multi-frame image: the frame scored (0-based)
    # Of a multi-frame image: the gain on each frame the self-check restored
    # (`pipeline.scoring.self_check_frames`); self_check_gain_db is their mean.
    self_check_frames: tuple[FrameGain, ...] = ()

    @property
    def self_check_gains_db(self) -> list[float]:
        """What the self-check measured of this image: a gain per frame checked (one for a
        single-frame image); the do-no-harm rule counts each as an image of the series."""
        if self.self_check_frames:
            return [frame.gain_db for frame in self.self_check_frames]
        return [] if self.self_check_gain_db is None else [self.self_check_gain_db]

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "psnr_db": self.fidelity.psnr_db,
            "ssim": self.fidelity.ssim,
            "data_range": self.fidelity.data_range,
            "self_check_gain_db": self.self_check_gain_db,
            "qa": self.qa.verdict,
            "qa_reasons": list(self.qa.reasons),
            "sop": self.sop,
            "source_sop": self.source_sop,
        }
        if self.scored_frame is not None:  # single frames: the record as it always was
            record["scored_frame"] = self.scored_frame + 1  # as DICOM numbers frames
        if self.self_check_frames:
            record["self_check_frames"] = [
                {"frame": f.frame + 1, "gain_db": f.gain_db} for f in self.self_check_frames
            ]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageOutcome":
        return cls(
            source_sop=data["source_sop"],
            sop=data["sop"],
            fidelity=ImageMetrics(data["psnr_db"], data["ssim"], data["data_range"]),
            self_check_gain_db=data["self_check_gain_db"],
            qa=QaVerdict(data["qa"], tuple(data["qa_reasons"])),
            scored_frame=data["scored_frame"] - 1 if data.get("scored_frame") else None,
            self_check_frames=tuple(
                FrameGain(f["frame"] - 1, f["gain_db"]) for f in data.get("self_check_frames", ())
            ),
        )


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage of one method on one series: `measure_s` the self-check's
    restoration, first; `enhance_s` the enhancement, with the self-check's scoring, then each
    image's scoring and derived image built (and stored) beside it while the next batch runs;
    `write_s` what is left after it (the last images, building and storing the report)."""

    enhance_s: float = 0.0
    measure_s: float = 0.0
    write_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 3) for key, value in vars(self).items()}

    @property
    def total_s(self) -> float:
        return self.enhance_s + self.measure_s + self.write_s


@dataclass(frozen=True)
class MethodOutcome:
    """One method's derived series and metrics report for one source series."""

    method: str
    version: str
    model_sha256: str | None
    scale: int
    device: str
    derived_series_uid: str
    report_series_uid: str
    report_sop_uid: str
    images: tuple[ImageOutcome, ...]
    timings: StageTimings = field(default_factory=StageTimings)

    @cached_property
    def summary(self) -> SeriesMetrics:
        """Fidelity over the images (computed once: the record is frozen)."""
        return summarize([image.fidelity for image in self.images])

    @property
    def qa(self) -> Verdict:
        """A series is as bad as its worst image."""
        return worst_verdict(image.qa.verdict for image in self.images)

    @property
    def psnr_mean_db(self) -> float | None:
        mean = self.summary.psnr_mean_db
        return reported(mean) if math.isfinite(mean) else None  # all identical: no mean

    @property
    def ssim_mean(self) -> float:
        return reported(self.summary.ssim_mean)

    @property
    def self_check_gains_db(self) -> list[float]:
        """The gains the self-check measured (a long series' is a spread sample): one per image
        checked, or per frame checked of a multi-frame image."""
        return [gain for image in self.images for gain in image.self_check_gains_db]

    @property
    def _checked(self) -> str:
        """What the self-check's gains are of: "images", or "frames" when a multi-frame image
        had several of its frames checked."""
        return "frames" if any(image.self_check_frames for image in self.images) else "images"

    @property
    def self_check_gain_mean_db(self) -> float | None:
        return _mean(self.self_check_gains_db)

    @property
    def self_check_gain_ci_db(self) -> tuple[float, float] | None:
        """95 % Student-t interval of the mean gain over the checked images (None below two)."""
        interval = mean_interval(self.self_check_gains_db)
        return (reported(interval[0]), reported(interval[1])) if interval else None

    @property
    def self_check_text(self) -> str:
        """ "+1.23 dB [+0.95, +1.51] on 16 of 300 images": the mean, its 95 % interval and the
        sample it rests on, as `enhance` and `jobs show` print it ("off" when not checked)."""
        mean = self.self_check_gain_mean_db
        if mean is None:
            return "off"
        ci = self.self_check_gain_ci_db
        interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
        checked = len(self.self_check_gains_db)
        if self._checked == "images":
            return f"{mean:+.2f} dB{interval} on {checked} of {len(self.images)} images"
        images = sum(image.self_check_gain_db is not None for image in self.images)
        return (
            f"{mean:+.2f} dB{interval} on {checked} frames of {images} of {len(self.images)} images"
        )

    def harm(self, mean_min_db: float, image_min_db: float) -> tuple[str, ...]:
        """Why this derived series must not be trusted: QA failed on an image, or the self-check
        says the method makes the series (or one image) worse than the reference. Empty: none."""
        reasons = []
        failed = [image for image in self.images if image.qa.verdict == "fail"]
        if failed:
            first = _first_failure(failed[0].qa.reasons)
            reasons.append(
                f"QA verdict 'fail' on {len(failed)} of {len(self.images)} images{first}"
            )
        mean = self.self_check_gain_mean_db
        if mean is not None and mean < mean_min_db:
            reasons.append(f"self-check mean gain {mean:+.2f} dB < {mean_min_db:+.2f} dB")
        gains = self.self_check_gains_db
        worse = [gain for gain in gains if gain < image_min_db]
        if worse:
            reasons.append(
                f"self-check gain below {image_min_db:+.2f} dB on {len(worse)} of "
                f"{len(gains)} checked {'image(s)' if self._checked == 'images' else 'frames'} "
                f"(worst {min(worse):+.2f} dB)"
            )
        return tuple(reasons)

    def image_for(self, source_sop: str) -> ImageOutcome:
        return next(image for image in self.images if image.source_sop == source_sop)

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "method": self.method,
            "version": self.version,
            "model_sha256": self.model_sha256,
            "scale": self.scale,
            "device": self.device,
            "derived_series_uid": self.derived_series_uid,
            "report_series_uid": self.report_series_uid,
            "report_sop_uid": self.report_sop_uid,
            "images": len(self.images),
            "psnr_mean_db": self.psnr_mean_db,
            "ssim_mean": self.ssim_mean,
            "self_check_gain_mean_db": self.self_check_gain_mean_db,
            "self_check_gain_ci_db": list(ci) if (ci := self.self_check_gain_ci_db) else None,
            "self_check_images": sum(i.self_check_gain_db is not None for i in self.images),
            "qa": self.qa,
            "timings": self.timings.as_dict(),
            "per_image": [image.as_dict() for image in self.images],
        }
        if self._checked == "frames":  # of multi-frame images: how many frames were checked
            record["self_check_frames"] = len(self.self_check_gains_db)
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodOutcome":
        return cls(
            method=data["method"],
            version=data["version"],
            model_sha256=data["model_sha256"],
            scale=data["scale"],
            device=data["device"],
            derived_series_uid=data["derived_series_uid"],
            report_series_uid=data["report_series_uid"],
            report_sop_uid=data["report_sop_uid"],
            images=tuple(ImageOutcome.from_dict(image) for image in data["per_image"]),
            timings=StageTimings(**data["timings"]),
        )


@dataclass(frozen=True)
class DeclinedImage:
    """A source instance no derived image stands for, and why (it still goes out unchanged)."""

    sop: str
    reason: str


def _first_failure(reasons: Sequence[str]) -> str:
    """ " (the first: <what failed it>, qa.<its limit>)": what an operator tunes, named where the
    series is held (`QaVerdict.reasons` name what failed an image first)."""
    if not reasons:
        return ""
    first = reasons[0]
    named = [measure for measure in QA_MEASURES if measure.replace("_", " ") in first]
    setting = f", qa.{named[0]}_fail" if named else ""  # none for NaN or infinite pixels
    return f" (the first: {first}{setting})"


@dataclass(frozen=True)
class SeriesOutcome:
    """The enhancement of one job's series: `status` is "done" or "skipped: <why>"."""

    status: str
    load_s: float = 0.0
    declined: tuple[DeclinedImage, ...] = ()
    methods: tuple[MethodOutcome, ...] = ()

    @property
    def done(self) -> bool:
        return self.status == DONE

    @property
    def qa_failed(self) -> bool:
        return any(method.qa == "fail" for method in self.methods)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "load_s": round(self.load_s, 3),
            "skipped": [{"sop": d.sop, "reason": d.reason} for d in self.declined],
            "enhancement": self.status,
        }
        if self.done:
            data["methods"] = [method.as_dict() for method in self.methods]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeriesOutcome":
        return cls(
            status=data.get("enhancement", "-"),
            load_s=data.get("load_s", 0.0),
            declined=tuple(DeclinedImage(d["sop"], d["reason"]) for d in data.get("skipped", [])),
            methods=tuple(MethodOutcome.from_dict(m) for m in data.get("methods", [])),
        )
