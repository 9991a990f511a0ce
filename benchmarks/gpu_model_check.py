"""Check the shipped SRCNN models on any Keras 3 backend: load, run, time, checksum.

Standalone on purpose: it imports numpy and keras only (no dicomnode, no TensorFlow unless
KERAS_BACKEND=tensorflow), so it runs where TensorFlow cannot, e.g. on a GPU machine with
JAX (KERAS_BACKEND=jax). It checks the shipped weights and architecture through Keras; it
does NOT exercise dicomnode's own TensorFlow code path (dicomnode.imaging.srcnn.SrcnnRunner).

For each model file it
  (a) loads it with keras.saving.load_model(path, compile=False) (the models use only
      built-in layers: Input, Rescaling, Conv2D, Add; no custom objects) and checks that it
      is the residual 9-1-5 SRCNN;
  (b) builds a deterministic synthetic batch of 512x512 slices in 0..1 (soft-edged
      ellipse phantom + texture + seeded Gaussian noise; each slice a little different);
  (c) times inference host-to-host (numpy in, numpy out, so the time includes the
      transfers and waits for the result) for each batch size: warm-up, then the median of
      --repeats runs, reported as ms per 512x512 slice; with JAX also the device-resident
      time (input already on the device, block_until_ready);
  (d) records output checksum statistics (mean, std, min, max, float64 sum) per batch size,
      and the max abs difference of the first slice against a reference .npy (--reference,
      typically saved on CPU with TensorFlow by --save-reference); with JAX also the
      difference at full float32 matmul precision (GPUs may use TF32 by default);
  (e) prints a table and writes JSON (--out).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/gpu_model_check.py models/srcnn-x1.keras \
        --batch-sizes 1 8 --save-reference .gpucheck/ref-x1.npy --out .gpucheck/cpu-x1.json
    KERAS_BACKEND=jax python benchmarks/gpu_model_check.py models/srcnn-x1.keras \
        --reference .gpucheck/ref-x1.npy --out $OUT/gpu-x1.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

EXPECTED_CONVS = ((64, 9), (32, 1), (1, 5))  # the 9-1-5 SRCNN, as in dicomnode/imaging/srcnn.py
MACS_PER_PIXEL = 9 * 9 * 64 + 64 * 32 + 5 * 5 * 32  # 8,032
SIZE = 512


def synthetic_batch(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(count, size, size, 1) float32 in 0..1: smooth phantom + texture + seeded noise."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:size, :size].astype(np.float64) + 0.5) / size * 2 - 1  # -1..1

    def ellipse(cx, cy, ax, ay, angle, edge):
        c, s = np.cos(angle), np.sin(angle)
        u = ((xx - cx) * c + (yy - cy) * s) / ax
        v = (-(xx - cx) * s + (yy - cy) * c) / ay
        r = np.sqrt(u * u + v * v)
        # Soft edge: smooth, like an upsampled slice.
        return 0.5 - 0.5 * np.tanh((r - 1) / (2 * edge))

    slices = []
    for i in range(count):
        shift = 0.02 * np.sin(i)  # each slice a little different
        img = 0.05 + 0.55 * ellipse(shift, 0, 0.85, 0.95, 0, 0.02)  # body
        img -= 0.35 * ellipse(-0.3 + shift, 0.05, 0.2, 0.45, 0.3, 0.015)  # "lungs"
        img -= 0.35 * ellipse(0.3 + shift, 0.05, 0.2, 0.45, -0.3, 0.015)
        img += 0.3 * ellipse(shift, -0.6, 0.12, 0.1, 0, 0.01)  # "bone"
        img += 0.1 * ellipse(0.1 + shift, 0.4, 0.15, 0.08, 0.5, 0.01)
        img += 0.03 * np.sin(25 * xx + i) * np.cos(17 * yy)  # texture
        img += rng.normal(0, 0.015, img.shape)  # noise
        slices.append(np.clip(img, 0, 1))
    return np.stack(slices)[..., None].astype(np.float32)


def check_architecture(model: Any) -> dict[str, Any]:
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    found = tuple((int(layer.filters), int(layer.kernel_size[0])) for layer in convs)
    return {
        "name": model.name,
        "layers": [f"{layer.__class__.__name__}:{layer.name}" for layer in model.layers],
        "convs": [list(c) for c in found],
        "is_srcnn_915": found == EXPECTED_CONVS,
        "params": int(model.count_params()),
        "input_shape": str(model.input_shape),
        "output_shape": str(model.output_shape),
    }


def device_info(backend: str) -> dict[str, Any]:
    info: dict[str, Any] = {"backend": backend}
    if backend == "jax":
        import jax

        info["jax_version"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
        info["device_kinds"] = [d.device_kind for d in jax.devices()]
        info["default_backend"] = jax.default_backend()
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow_version"] = tf.__version__
        info["devices"] = [d.name for d in tf.config.list_physical_devices()]
    elif backend == "torch":
        import torch

        info["torch_version"] = torch.__version__
        info["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ] or ["cpu"]
    return info


def make_forward(model: Any, backend: str, precision: str | None = None) -> Callable:
    """numpy (N, H, W, 1) -> backend array; compiled once per input shape."""
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def apply(tv, ntv, x):
            out, _ = model.stateless_call(tv, ntv, x, training=False)
            return out

        if precision is None:
            jitted = jax.jit(apply)
        else:

            def precise(tv, ntv, x):
                with jax.default_matmul_precision(precision):
                    return apply(tv, ntv, x)

            jitted = jax.jit(precise)
        return lambda x: jitted(trainable, non_trainable, x)
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)],
        )
        return lambda x: fn(tf.constant(x))
    return lambda x: model(x, training=False)


def to_numpy(y: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(y))


def median_seconds(run: Callable[[], object], repeats: int, warmup: int) -> tuple[float, list]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def stats(a: np.ndarray) -> dict[str, float]:
    a64 = a.astype(np.float64)
    return {
        "mean": float(a64.mean()),
        "std": float(a64.std()),
        "min": float(a64.min()),
        "max": float(a64.max()),
        "sum": float(a64.sum()),
    }


def check_model(path: Path, args: argparse.Namespace, backend: str) -> dict[str, Any]:
    started = time.perf_counter()
    model = keras.saving.load_model(path, compile=False)
    load_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "model_file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "load_s": round(load_s, 3),
        "architecture": check_architecture(model),
    }
    data = synthetic_batch(max(args.batch_sizes), args.size, args.seed)
    result["input"] = {"shape": list(data.shape), "seed": args.seed, **stats(data)}
    forward = make_forward(model, backend)
    flop_per_slice = 2 * MACS_PER_PIXEL * args.size * args.size

    reference = np.load(args.reference) if args.reference else None
    rows = []
    first_slice = None
    for batch in args.batch_sizes:
        x = np.ascontiguousarray(data[:batch])
        row: dict[str, Any] = {"batch": batch}
        try:
            t0 = time.perf_counter()
            out = to_numpy(forward(x))  # first call: tracing / compilation
            row["first_call_s"] = round(time.perf_counter() - t0, 3)
            med, times = median_seconds(lambda x=x: to_numpy(forward(x)), args.repeats, args.warmup)
        except Exception as exc:  # out of memory and the like: record, go on
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            rows.append(row)
            print(f"  batch {batch}: {row['error']}", file=sys.stderr)
            continue
        row["ms_per_slice"] = 1000 * med / batch
        row["ms_per_batch"] = 1000 * med
        row["runs_ms"] = [round(1000 * t, 3) for t in times]
        row["gflops"] = flop_per_slice * batch / med / 1e9
        if backend == "jax":
            import jax

            x_dev = jax.device_put(x)
            dev_med, _ = median_seconds(
                lambda x_dev=x_dev: forward(x_dev).block_until_ready(), args.repeats, args.warmup
            )
            row["device_ms_per_slice"] = 1000 * dev_med / batch
        row["output"] = stats(out)
        row["output_shape"] = list(out.shape)
        row["finite"] = bool(np.isfinite(out).all())
        if first_slice is None:
            first_slice = out[0]
        # Same slice through different batch sizes: should agree (batch-independent).
        row["slice0_max_abs_diff_vs_first_batch"] = float(np.max(np.abs(out[0] - first_slice)))
        if reference is not None:
            row["slice0_max_abs_diff_vs_reference"] = float(np.max(np.abs(out[0] - reference)))
        rows.append(row)
        del out
    result["batches"] = rows

    if first_slice is not None:
        result["residual_vs_input_slice0"] = {
            "max_abs": float(np.max(np.abs(first_slice - data[0]))),
            "mean_abs": float(np.mean(np.abs(first_slice - data[0]))),
        }
    if args.save_reference and first_slice is not None:
        args.save_reference.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_reference, first_slice.astype(np.float32))
        result["saved_reference"] = str(args.save_reference)
    if reference is not None:
        result["reference_file"] = str(args.reference)
        result["reference_stats"] = stats(reference)
        if first_slice is not None:
            diff = np.abs(first_slice.astype(np.float64) - reference)
            result["max_abs_diff_vs_reference"] = float(diff.max())
            result["mean_abs_diff_vs_reference"] = float(diff.mean())
        if backend == "jax":
            # GPUs may run float32 convolutions in TF32 by default; redo slice 0 at full fp32.
            precise = make_forward(model, backend, precision="highest")
            out = to_numpy(precise(np.ascontiguousarray(data[:1])))[0]
            diff = np.abs(out.astype(np.float64) - reference)
            result["max_abs_diff_vs_reference_highest_precision"] = float(diff.max())
            result["mean_abs_diff_vs_reference_highest_precision"] = float(diff.mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help=".keras model files")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=Path, help="reference .npy (slice 0 output)")
    parser.add_argument("--save-reference", type=Path, help="save slice 0 output here (.npy)")
    parser.add_argument("--out", type=Path, help="JSON results file")
    args = parser.parse_args()
    if len(args.models) > 1 and (args.reference or args.save_reference):
        parser.error("--reference/--save-reference take one model at a time")

    backend = keras.backend.backend()
    report: dict[str, Any] = {
        "script": "benchmarks/gpu_model_check.py",
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "size": args.size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "timing": "host-to-host: numpy in, numpy out (includes transfers), median, ms per slice",
        **device_info(backend),
        "models": [],
    }
    print(f"keras {keras.__version__}, backend {backend}, devices {report.get('devices')}")
    for path in args.models:
        result = check_model(path, args, backend)
        report["models"].append(result)
        arch = result["architecture"]
        print(
            f"\n{path.name}: {arch['name']}, 9-1-5={arch['is_srcnn_915']}, "
            f"{arch['params']} params, sha256 {result['sha256'][:12]}, load {result['load_s']} s"
        )
        print(
            f"{'batch':>5} {'ms/slice':>9} {'dev ms/sl':>9} {'GFLOP/s':>9} {'1st call s':>10} "
            f"{'out mean':>10} {'out std':>10} {'maxdiff ref':>11}"
        )
        for row in result["batches"]:
            if "error" in row:
                print(f"{row['batch']:>5} {row['error']}")
                continue
            dev = row.get("device_ms_per_slice")
            ref = row.get("slice0_max_abs_diff_vs_reference")
            print(
                f"{row['batch']:>5} {row['ms_per_slice']:>9.3f} "
                f"{'' if dev is None else f'{dev:.3f}':>9} {row['gflops']:>9.1f} "
                f"{row['first_call_s']:>10.3f} {row['output']['mean']:>10.6f} "
                f"{row['output']['std']:>10.6f} {'' if ref is None else f'{ref:.2e}':>11}"
            )
        for key in (
            "max_abs_diff_vs_reference",
            "max_abs_diff_vs_reference_highest_precision",
            "residual_vs_input_slice0",
        ):
            if key in result:
                print(f"  {key}: {result[key]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
