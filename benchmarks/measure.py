"""Measurement vs inference: what scoring a derived series costs next to computing it.

Runs a job's enhancement (`enhance_series`, the code a node's worker runs: sampled self-check
first, then SRCNN with each image scored (fidelity, QA) and its derived image built in a second
thread while the next batch runs, then the SR and the files) on a generated CT series of 512²
slices with the shipped settings, and SRCNN alone on the same series. It prints ms per slice of
the inference alone, of the per-image measurement timed alone (fidelity PSNR/SSIM + QA, one
thread), the self-check's seconds per series, the job's stages and its whole time, and two
ratios for this series and for a 300-slice one: measurement / inference as work (self-check +
per-image measurement, over the inference alone; issue 16 asks for at most 25 %) and the job's
whole time over the inference alone (what the overlap leaves). Timings on a shared machine are
noisy: compare two trees in the same run. Writes JSON (default benchmarks/results/measure.json):
    python benchmarks/measure.py [--instances 40] [--size 512] [--repeats 2] [--out FILE]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.config import Settings  # noqa: E402
from dicomnode.imaging.enhance import enhance_stack  # noqa: E402
from dicomnode.imaging.metrics import compare  # noqa: E402
from dicomnode.imaging.qa import assess  # noqa: E402
from dicomnode.pipeline.enhancement import enhance_series  # noqa: E402
from dicomnode.pipeline.methods import methods_for  # noqa: E402
from dicomnode.pipeline.offline import file_sink, series_in  # noqa: E402
from dicomnode.pipeline.sources import load_sources  # noqa: E402
from tests.support.series import write_ct_series  # noqa: E402


def job_stages(work: Path, settings: Settings, count: int) -> dict[str, float]:
    """ms per slice of each stage of one job (its details' timings), SRCNN on the CT series."""
    ((_, inputs),) = series_in(work / "in").items()
    output = enhance_series(1, inputs, settings, methods_for(settings), file_sink(work / "out"))
    (method,) = output.outcome.methods
    return {name: 1000 * seconds / count for name, seconds in method.timings.as_dict().items()}


def per_image_ms(work: Path) -> dict[str, float]:
    """ms per slice of fidelity and of QA alone, each output scored against its source (the
    output here: the source plus a small shift, so nothing is identical)."""
    ((_, inputs),) = series_in(work / "in").items()
    images, _ = load_sources(inputs)
    pairs = [(image.image.values[0], image.image.values[0] * 0.98 + 3.0) for image in images]
    limits = (-32768.0, 32767.0)
    started = time.perf_counter()
    for source, output in pairs:
        compare(source, output)
    fidelity = time.perf_counter() - started
    started = time.perf_counter()
    for source, output in pairs:
        assess(source, output, limits=limits)
    qa = time.perf_counter() - started
    return {"fidelity_ms": 1000 * fidelity / len(pairs), "qa_ms": 1000 * qa / len(pairs)}


def inference_ms(work: Path, settings: Settings) -> float:
    """ms per slice of SRCNN alone over the series, a forward pass of images at a time."""
    ((_, inputs),) = series_in(work / "in").items()
    images, _ = load_sources(inputs)
    (method,) = methods_for(settings)("CT")
    per_pass = method.runner.images_per_pass(images[0].image.values.shape[1:])
    started = time.perf_counter()
    for first in range(0, len(images), per_pass):
        stack = np.concatenate([image.image.values for image in images[first : first + per_pass]])
        enhance_stack(stack, "CT", method)
    return 1000 * (time.perf_counter() - started) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/measure.json")
    args = parser.parse_args()

    shipped = Settings()  # SRCNN x1, sampled self-check, QA
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dicomnode-measure-") as tmp:
        work = Path(tmp)
        write_ct_series(work / "in", args.instances, size=args.size)
        for repeat in range(args.repeats + 1):  # the first loads the model and warms up
            stages = job_stages(work, shipped, args.instances)
            alone = inference_ms(work, shipped)
            if repeat:
                runs.append(
                    {
                        "inference_ms": alone,
                        "self_check_s": stages["measure_s"] * args.instances / 1000,
                        "job_enhance_ms": stages["enhance_s"],
                        "job_write_ms": stages["write_s"],
                        "job_ms": sum(stages.values()),
                        **per_image_ms(work),
                    }
                )
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}

    def work_ratio(count: int) -> float:
        per_image = median["fidelity_ms"] + median["qa_ms"]
        measured = median["self_check_s"] * 1000 + count * per_image
        return measured / (count * median["inference_ms"])

    def job_ratio(count: int) -> float:
        self_check_ms = median["self_check_s"] * 1000
        per_slice = median["job_ms"] - self_check_ms / args.instances  # all but the self-check
        return (count * per_slice + self_check_ms) / (count * median["inference_ms"])

    (srcnn,) = methods_for(shipped)("CT")
    print(
        f"{args.instances} x {args.size}² CT, shipped defaults (SRCNN x1 over {srcnn.views} "
        f"view(s) on {srcnn.device}, self-check of {shipped.enhance.self_check_images} images, "
        f"QA); median of {args.repeats}"
    )
    print(
        f"ms/slice: inference alone {median['inference_ms']:.1f}; measurement alone "
        f"{median['fidelity_ms'] + median['qa_ms']:.1f} (fidelity {median['fidelity_ms']:.1f}, "
        f"QA {median['qa_ms']:.1f}); self-check {median['self_check_s']:.2f} s per series; "
        f"job {median['job_ms']:.1f} (enhance with scoring and writing beside it "
        f"{median['job_enhance_ms']:.1f}, write after it {median['job_write_ms']:.1f})"
    )
    print(
        f"measurement / inference, as work: {work_ratio(args.instances):.2f} for "
        f"{args.instances} slices, {work_ratio(300):.2f} for 300; job / inference alone: "
        f"{job_ratio(args.instances):.2f}, {job_ratio(300):.2f} for 300"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "instances": args.instances,
                "size": args.size,
                "cpu_count": os.cpu_count(),
                "machine": platform.platform(),
                "srcnn": {"version": srcnn.version, "views": srcnn.views, "device": srcnn.device},
                "median": {key: round(value, 2) for key, value in median.items()},
                "measure_over_inference": round(work_ratio(args.instances), 3),
                "measure_over_inference_300": round(work_ratio(300), 3),
                "job_over_inference": round(job_ratio(args.instances), 3),
                "job_over_inference_300": round(job_ratio(300), 3),
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
