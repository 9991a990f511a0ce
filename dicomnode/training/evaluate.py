"""Evaluation against the original: degrade, restore with each method, score, summarise honestly.

For every image: degrade it with the shared model, restore the degraded image with each method,
and score the result against the *original* (never against the input) with the documented
convention (`dicomnode.imaging.metrics`: data_range = the original's max - min without padding;
`scale` pixels shaved from each border for scale > 1). At scale 1, "bicubic" is the degraded input
itself (cubic resampling to the same grid is the identity), so its gain is the gain over doing
nothing.

The summary pairs each method with bicubic image by image: mean gain in dB, a bootstrap 95 %
confidence interval of that mean (10,000 resamples, seeded), a cluster-bootstrap interval that
resamples whole patients (images of one patient are not independent; a test set of 3 patients
is 3 samples, not 18), the worst image, the SSIM gain with its own interval, and a two-sided
Wilcoxon signed-rank p-value; per method overall, per modality, per plane (axial vs reformats)
and per modality and plane.
"""

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.degrade import Degradation, bicubic_restore, crop_to_multiple, degrade
from dicomnode.imaging.enhance import BaselineMethod, Method, SrcnnMethod, enhance_stack
from dicomnode.imaging.metrics import compare
from dicomnode.imaging.normalize import fill_padding
from dicomnode.imaging.srcnn import LoadedModel, ModelError, SrcnnRunner
from dicomnode.training.corpus import CorpusImage, pseudonym
from dicomnode.training.linear import LinearFilter, LinearMethod

Restorer = Callable[[np.ndarray, CorpusImage, tuple[int, int]], np.ndarray]
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class MetricRow:
    image: str
    path: str
    modality: str
    plane: str
    patient: str  # pseudonymous
    method: str
    psnr_db: float
    ssim: float
    data_range: float
    gain_db_vs_bicubic: float
    ssim_gain_vs_bicubic: float


def bicubic(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
    return bicubic_restore(low, shape)


def nearest(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum(np.arange(shape[0]) * low.shape[0] // shape[0], low.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) * low.shape[1] // shape[1], low.shape[1] - 1)
    return low[np.ix_(rows, cols)]


ANY = "*"  # the key of a model or filter used for every modality without its own


def restorer_for(methods: Method | Mapping[str, Method]) -> Restorer:
    """A restorer running `methods` (one for all images, or one per modality, ANY the rest)."""
    chosen = methods if isinstance(methods, Mapping) else {ANY: methods}

    def restore(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
        method = chosen.get(image.modality) or chosen[ANY]
        return enhance_stack(low[None], image.modality, method, inverted=image.inverted).values[0]

    return restore


def standard_methods(
    scale: int,
    *,
    model: LoadedModel | Mapping[str, LoadedModel] | None,
    baseline: BaselineParams | None = None,
    linear: Mapping[str, LinearFilter] | None = None,
    include_nearest: bool = False,
    views: int = 1,
) -> dict[str, Restorer]:
    """bicubic (the bar), the classical baseline, a least-squares linear filter when fitted,
    SRCNN when a model is given (or one per modality), averaged over `views` symmetries;
    nearest if asked."""
    methods: dict[str, Restorer] = {"bicubic": bicubic}
    if include_nearest:
        methods["nearest"] = nearest
    methods["baseline"] = restorer_for(BaselineMethod(baseline or BaselineParams(), scale=scale))
    if linear:
        methods["linear"] = restorer_for({k: LinearMethod(f) for k, f in linear.items()})
    models = model if isinstance(model, Mapping) else {ANY: model} if model else {}
    for loaded in models.values():
        if loaded.scale != scale:
            raise ModelError(
                f"{loaded.path or loaded.version}: holds a x{loaded.scale} model, not the "
                f"x{scale} evaluated (--scale {scale})"
            )
    if models:
        methods["srcnn"] = restorer_for(
            {key: SrcnnMethod(SrcnnRunner(loaded), views=views) for key, loaded in models.items()}
        )
    return methods


@dataclass(frozen=True)
class ImageOutputs:
    """What the comparison figure shows for one image."""

    image: CorpusImage
    reference: np.ndarray
    degraded: np.ndarray
    restored: dict[str, np.ndarray]
    rows: list[MetricRow]


def evaluate_image(
    image: CorpusImage, scale: int, methods: Mapping[str, Restorer], degradation: Degradation
) -> ImageOutputs:
    padding = crop_to_multiple(image.padding, scale)
    reference = fill_padding(
        crop_to_multiple(image.values, scale), padding, image.modality, inverted=image.inverted
    )
    degraded = degrade(reference, degradation)
    shave = scale if scale > 1 else 0
    restored = {
        name: restore(degraded, image, reference.shape) for name, restore in methods.items()
    }
    scores = {
        name: compare(reference, out, shave=shave, padding=padding)
        for name, out in restored.items()
    }
    bicubic = scores["bicubic"]
    rows = [
        MetricRow(
            image=image.name,
            path=str(image.path),
            modality=image.modality,
            plane=image.plane,
            patient=pseudonym(image.group),
            method=name,
            psnr_db=score.psnr_db,
            ssim=score.ssim,
            data_range=score.data_range,
            gain_db_vs_bicubic=score.psnr_db - bicubic.psnr_db,
            ssim_gain_vs_bicubic=score.ssim - bicubic.ssim,
        )
        for name, score in scores.items()
    ]
    return ImageOutputs(image, reference, degraded, restored, rows)


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of `values`."""
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (BOOTSTRAP_RESAMPLES, values.size), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: Sequence[str], seed: int = 0
) -> tuple[float, float]:
    """95 % interval of the mean when whole clusters (patients) are resampled, not images."""
    names = sorted(set(clusters))
    if len(names) < 2:
        return (math.nan, math.nan)
    by_cluster = [values[[c == name for c in clusters]] for name in names]
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(BOOTSTRAP_RESAMPLES // 10):  # fewer: each draw concatenates arrays
        drawn = rng.integers(0, len(names), len(names))
        means.append(float(np.concatenate([by_cluster[i] for i in drawn]).mean()))
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _wilcoxon_p(gains: np.ndarray) -> float | None:
    if gains.size < 2 or not np.any(gains):
        return None
    return float(wilcoxon(gains).pvalue)


def _summary(rows: Sequence[MetricRow]) -> dict[str, Any]:
    gains = np.array([r.gain_db_vs_bicubic for r in rows])
    ssim_gains = np.array([r.ssim_gain_vs_bicubic for r in rows])
    patients = [r.patient for r in rows]
    worst = int(np.argmin(gains))
    return {
        "n_images": len(rows),
        "n_patients": len(set(patients)),
        "psnr_mean": float(np.mean([r.psnr_db for r in rows])),
        "ssim_mean": float(np.mean([r.ssim for r in rows])),
        "gain_db_vs_bicubic": float(gains.mean()),
        "gain_ci95": list(bootstrap_ci(gains)),
        "gain_ci95_by_patient": list(cluster_bootstrap_ci(gains, patients)),
        "worst_gain_db": float(gains[worst]),
        "worst_image": rows[worst].image,
        "wilcoxon_p": _wilcoxon_p(gains),
        "ssim_gain_vs_bicubic": float(ssim_gains.mean()),
        "ssim_gain_ci95": list(bootstrap_ci(ssim_gains)),
    }


def summarize_rows(rows: Sequence[MetricRow]) -> dict[str, dict[str, Any]]:
    """Per method: the overall summary plus `by_modality`, `by_plane` and `by_modality_plane`
    (keys "CT/axial", ...) with the same fields."""
    summary: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        entry = _summary(mine)
        for name, key in (
            ("by_modality", lambda r: r.modality),
            ("by_plane", lambda r: r.plane),
            ("by_modality_plane", lambda r: f"{r.modality}/{r.plane}"),
        ):
            entry[name] = {
                value: _summary([r for r in mine if key(r) == value])
                for value in sorted({key(r) for r in mine})
            }
        summary[method] = entry
    return summary


def write_per_image_csv(rows: Sequence[MetricRow], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MetricRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def write_summary_csv(summary: Mapping[str, dict], path: Path) -> None:
    fields = [
        "method",
        "subset",
        "n_images",
        "n_patients",
        "psnr_mean",
        "ssim_mean",
        "gain_db_vs_bicubic",
        "gain_ci95_low",
        "gain_ci95_high",
        "patient_ci95_low",
        "patient_ci95_high",
        "worst_gain_db",
        "wilcoxon_p",
        "ssim_gain_vs_bicubic",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for method, entry in summary.items():
            for subset, values in subsets(entry):
                low, high = values["gain_ci95"]
                patient_low, patient_high = values["gain_ci95_by_patient"]
                writer.writerow(
                    {
                        "method": method,
                        "subset": subset,
                        "gain_ci95_low": low,
                        "gain_ci95_high": high,
                        "patient_ci95_low": patient_low,
                        "patient_ci95_high": patient_high,
                        **{k: values[k] for k in fields if k in values},
                    }
                )


def subsets(entry: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """("all", overall) then every modality, plane and modality/plane of one method."""
    parts: list[tuple[str, Mapping[str, Any]]] = [("all", entry)]
    for name in ("by_modality", "by_plane", "by_modality_plane"):
        parts.extend(entry[name].items())
    return parts
