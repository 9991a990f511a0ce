"""Evaluation against the original: degrade, restore with each method, score, summarise honestly.

For every image: degrade it with the shared model, restore the degraded image with each method,
and score the result against the *original* (never against the input) with the documented
convention (`dicomnode.imaging.metrics`: data_range = the original's max - min without padding;
`scale` pixels shaved from each border for scale > 1). At scale 1, "bicubic" is the degraded input
itself (cubic resampling to the same grid is the identity), so its gain is the gain over doing
nothing.

The summary pairs each method with bicubic image by image: mean gain in dB, a bootstrap 95 %
confidence interval of that mean (10,000 resamples, seeded) and a two-sided Wilcoxon signed-rank
p-value; per method overall and per modality.
"""

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.degrade import Degradation, bicubic_restore, crop_to_multiple, degrade
from dicomnode.imaging.enhance import BaselineMethod, Method, SrcnnMethod, enhance_stack
from dicomnode.imaging.metrics import compare
from dicomnode.imaging.normalize import fill_padding
from dicomnode.imaging.srcnn import LoadedModel, SrcnnRunner
from dicomnode.training.corpus import CorpusImage

Restorer = Callable[[np.ndarray, CorpusImage, tuple[int, int]], np.ndarray]
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class MetricRow:
    image: str
    path: str
    modality: str
    method: str
    psnr_db: float
    ssim: float
    data_range: float
    gain_db_vs_bicubic: float


def bicubic(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
    return bicubic_restore(low, shape)


def nearest(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum(np.arange(shape[0]) * low.shape[0] // shape[0], low.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) * low.shape[1] // shape[1], low.shape[1] - 1)
    return low[np.ix_(rows, cols)]


def restorer_for(method: Method) -> Restorer:
    def restore(low: np.ndarray, image: CorpusImage, shape: tuple[int, int]) -> np.ndarray:
        return enhance_stack(low[None], image.modality, method).values[0]

    return restore


def standard_methods(
    scale: int,
    *,
    model: LoadedModel | None,
    baseline: BaselineParams | None = None,
    include_nearest: bool = False,
) -> dict[str, Restorer]:
    """bicubic (the bar), the classical baseline, SRCNN when a model is given; nearest if asked."""
    methods: dict[str, Restorer] = {"bicubic": bicubic}
    if include_nearest:
        methods["nearest"] = nearest
    methods["baseline"] = restorer_for(BaselineMethod(baseline or BaselineParams(), scale=scale))
    if model is not None:
        if model.scale != scale:
            raise ValueError(f"model {model.version} is for scale {model.scale}, not {scale}")
        methods["srcnn"] = restorer_for(SrcnnMethod(SrcnnRunner(model)))
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
    reference = fill_padding(crop_to_multiple(image.values, scale), padding, image.modality)
    degraded = degrade(reference, degradation)
    shave = scale if scale > 1 else 0
    restored = {
        name: restore(degraded, image, reference.shape) for name, restore in methods.items()
    }
    scores = {
        name: compare(reference, out, shave=shave, padding=padding)
        for name, out in restored.items()
    }
    bicubic = scores["bicubic"].psnr_db
    rows = [
        MetricRow(
            image=image.name,
            path=str(image.path),
            modality=image.modality,
            method=name,
            psnr_db=score.psnr_db,
            ssim=score.ssim,
            data_range=score.data_range,
            gain_db_vs_bicubic=score.psnr_db - bicubic,
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


def _wilcoxon_p(gains: np.ndarray) -> float | None:
    if gains.size < 2 or not np.any(gains):
        return None
    return float(wilcoxon(gains).pvalue)


def _summary(rows: Sequence[MetricRow], ssim_bicubic: float) -> dict:
    gains = np.array([r.gain_db_vs_bicubic for r in rows])
    ssim = float(np.mean([r.ssim for r in rows]))
    return {
        "n_images": len(rows),
        "psnr_mean": float(np.mean([r.psnr_db for r in rows])),
        "ssim_mean": ssim,
        "gain_db_vs_bicubic": float(gains.mean()),
        "gain_ci95": list(bootstrap_ci(gains)),
        "wilcoxon_p": _wilcoxon_p(gains),
        "ssim_gain_vs_bicubic": ssim - ssim_bicubic,
    }


def summarize_rows(rows: Sequence[MetricRow]) -> dict[str, dict]:
    """Per method: the overall summary plus `by_modality` with the same fields."""

    def ssim_of_bicubic(modality: str | None) -> float:
        chosen = [r.ssim for r in rows if r.method == "bicubic" and modality in (None, r.modality)]
        return float(np.mean(chosen))

    summary: dict[str, dict] = {}
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        entry = _summary(mine, ssim_of_bicubic(None))
        entry["by_modality"] = {
            modality: _summary(
                [r for r in mine if r.modality == modality], ssim_of_bicubic(modality)
            )
            for modality in sorted({r.modality for r in mine})
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
        "modality",
        "n_images",
        "psnr_mean",
        "ssim_mean",
        "gain_db_vs_bicubic",
        "gain_ci95_low",
        "gain_ci95_high",
        "wilcoxon_p",
        "ssim_gain_vs_bicubic",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for method, entry in summary.items():
            for modality, values in [("all", entry), *entry["by_modality"].items()]:
                low, high = values["gain_ci95"]
                writer.writerow(
                    {
                        "method": method,
                        "modality": modality,
                        "gain_ci95_low": low,
                        "gain_ci95_high": high,
                        **{k: values[k] for k in fields if k in values},
                    }
                )
