"""Inference speed: SRCNN (batch 1 and 8; averaged over 8 views, the node's default) and the
classical baseline per 512x512 slice.

SRCNN 9-1-5 costs 8,032 multiply-adds per output pixel: 2 x 8,032 x 512² = 4.2 GFLOP per
slice; the table gives the achieved GFLOP/s next to the time. Input is real CT from
../shared/data when present (else a generated phantom); the network is untrained (speed does
not depend on the weights). Prints a table and writes JSON (default
benchmarks/results/inference.json). Usage:
    python benchmarks/inference.py [--size 512] [--repeats 5] [--out FILE]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.imaging.baseline import BaselineParams, enhance_baseline  # noqa: E402
from dicomnode.imaging.srcnn import (  # noqa: E402
    MACS_PER_PIXEL,
    SrcnnRunner,
    build_srcnn,
    from_network,
)


def slices(size: int, count: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    base = 0.3 + 0.2 * np.sin(12 * xx) * np.cos(9 * yy)
    rng = np.random.default_rng(0)
    return np.stack([base + rng.normal(0, 0.02, base.shape) for _ in range(count)]).astype(
        np.float32
    )


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: tracing, kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/inference.json")
    args = parser.parse_args()

    gflop = 2 * MACS_PER_PIXEL * args.size**2 / 1e9
    runner = SrcnnRunner(from_network(build_srcnn(1, seed=0)))
    rows = []
    for batch, views in ((1, 1), (8, 1), (8, 8)):
        images = slices(args.size, batch)

        def run(images: np.ndarray = images, views: int = views) -> np.ndarray:
            return runner.restore(images, views=views)

        ms = median_ms(run, args.repeats) / batch
        rows.append(
            {
                "method": f"srcnn batch {batch}" + (f", {views} views" if views > 1 else ""),
                "ms_per_slice": ms,
                "gflop_per_s": gflop * views / (ms / 1000),
            }
        )
    for params in (BaselineParams(), BaselineParams(denoise="nlm")):
        image = slices(args.size, 1)[0]
        ms = median_ms(lambda p=params, i=image: enhance_baseline(i, p), args.repeats)
        rows.append(
            {"method": f"baseline {params.denoise}", "ms_per_slice": ms, "gflop_per_s": None}
        )

    print(
        f"{args.size}x{args.size} slice, SRCNN {gflop:.2f} GFLOP/slice, "
        f"device {runner.device_description}"
    )
    print(f"{'method':<24} {'ms/slice':>10} {'GFLOP/s':>9}")
    for row in rows:
        rate = f"{row['gflop_per_s']:.1f}" if row["gflop_per_s"] else "-"
        print(f"{row['method']:<24} {row['ms_per_slice']:>10.1f} {rate:>9}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "size": args.size,
                "gflop_per_slice": gflop,
                "device": runner.device_description,
                "cpu_count": os.cpu_count(),
                "machine": platform.platform(),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
