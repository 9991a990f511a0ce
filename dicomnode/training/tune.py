"""Tune the classical baseline's parameters on training images: a small, exhaustive grid.

Each candidate is scored like `evaluate` scores a method (PSNR gain over bicubic against the
original, same degradation and convention), averaged over images and over the scales asked for.
Only training images may be given: the chosen defaults are then honest on the test series.
"""

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.enhance import BaselineMethod
from dicomnode.training.corpus import CorpusImage
from dicomnode.training.evaluate import bicubic, evaluate_image, restorer_for

GRID = {
    "denoise": ("bilateral", "none"),
    "denoise_strength": (0.5, 1.0, 1.5, 2.5),
    "unsharp_amount": (0.0, 0.25, 0.5, 1.0),
    "unsharp_sigma": (0.7, 1.0, 1.5),
}


@dataclass(frozen=True)
class Candidate:
    params: BaselineParams
    gain_db: float  # mean over images and scales
    gain_by_scale: dict[int, float]

    def as_dict(self) -> dict:
        return {**asdict(self.params), "gain_db": self.gain_db, "gain_by_scale": self.gain_by_scale}


def _candidates() -> list[BaselineParams]:
    seen, out = set(), []
    for denoise, strength, amount, sigma in itertools.product(*GRID.values()):
        params = BaselineParams(
            denoise=denoise,
            denoise_strength=strength if denoise != "none" else 0.0,
            unsharp_amount=amount,
            unsharp_sigma=sigma if amount else 1.0,
        )
        if params not in seen:
            seen.add(params)
            out.append(params)
    return out


def tune_baseline(images: Sequence[CorpusImage], scales: Sequence[int] = (1, 2)) -> list[Candidate]:
    """Every grid point with its mean gain over bicubic, best first."""
    results = []
    for params in _candidates():
        by_scale = {}
        for scale in scales:
            methods = {
                "bicubic": bicubic,
                "baseline": restorer_for(BaselineMethod(params, scale=scale)),
            }
            gains = [
                row.gain_db_vs_bicubic
                for image in images
                for row in evaluate_image(image, scale, methods, Degradation(scale)).rows
                if row.method == "baseline"
            ]
            by_scale[scale] = float(np.mean(gains))
        results.append(Candidate(params, float(np.mean(list(by_scale.values()))), by_scale))
    return sorted(results, key=lambda c: c.gain_db, reverse=True)


def main() -> None:
    """python -m dicomnode.training.tune DATA_DIR... [--every N]: print the ranked grid as JSON."""
    import argparse
    import json
    from pathlib import Path

    from dicomnode.training.corpus import load_images

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=5, help="use every Nth image (speed)")
    args = parser.parse_args()
    images = load_images(args.data)[:: args.every]
    ranked = tune_baseline(images)
    print(json.dumps({"images": len(images), "ranked": [c.as_dict() for c in ranked]}, indent=2))


if __name__ == "__main__":
    main()
