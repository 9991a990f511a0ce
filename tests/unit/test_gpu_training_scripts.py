"""The GPU training scripts' CPU side: the structured windows they draw from, and the weights they
save turned into the model the node loads (JAX itself is not installed here)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from dicomnode.imaging.srcnn import LAYERS, build_srcnn, load_model
from dicomnode.training.pairs import MIN_PATCH_STD

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_structured_windows_are_those_patch_sampler_retries_for() -> None:
    rng = np.random.default_rng(0)
    target = np.full((30, 40), 0.5, np.float32)  # flat: no window of it is structured
    target[:, 25:] += rng.normal(0, 0.05, (30, 15)).astype(np.float32)
    size = 8
    found = {tuple(p) for p in _script("train_on_gpu").structured_positions(target, size)}
    expected = {
        (r, c)
        for r in range(30 - size + 1)
        for c in range(40 - size + 1)
        if target[r : r + size, c : c + size].std() >= MIN_PATCH_STD
    }
    assert found == expected
    assert (0, 0) not in found and (0, 32) in found


def test_saved_weights_become_the_model_the_node_loads(tmp_path: Path, monkeypatch) -> None:
    source = build_srcnn(2, seed=5)
    rng = np.random.default_rng(5)
    weights = {}
    for index in range(len(LAYERS)):
        name = f"conv{index + 1}"
        kernel, bias = source.get_layer(name).get_weights()
        weights[f"{name}/kernel"] = rng.normal(0, 0.05, kernel.shape).astype(np.float32)
        weights[f"{name}/bias"] = rng.normal(0, 0.01, bias.shape).astype(np.float32)
    run = tmp_path / "run"
    run.mkdir()
    member = "seed0-lr0.001"
    np.savez(run / f"{member}.npz", **weights, member=member, checkpoint=2, val_loss=1e-3)
    other = {"name": "seed1-lr0.001", "loss": 9.0, "val_loss": 9.0, "lr": 1e-3}
    checkpoints = [
        {"seconds": 10.0 * n, "members": [other, {"name": member, **losses}]}
        for n, losses in enumerate(
            [
                {"loss": 2e-3, "val_loss": 1.1e-3, "lr": 1e-3},
                {"loss": 1.5e-3, "val_loss": 1.0e-3, "lr": 1e-5},
            ],
            start=1,
        )
    ]
    history = {
        "command": "train_on_gpu.py ...",
        "steps": 40,
        "batch": 128,
        "updates": 5120,
        "device": "cuda:0",
        "jax": "0.0",
        "train_groups": ["0123456789ab"],
        "validation_groups": [],
        "train_images": 3,
        "validation_images": 0,
        "checkpoints": checkpoints,
    }
    (run / "history.json").write_text(json.dumps(history))
    out = tmp_path / "models" / "srcnn-mr-x2.keras"
    argv = ["gpu_weights_to_keras", str(run / f"{member}.npz"), "--scale", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--modality", "MR"])
    _script("gpu_weights_to_keras").main()

    loaded = load_model(out)
    assert loaded.scale == 2
    for index in range(len(LAYERS)):
        name = f"conv{index + 1}"
        kernel, bias = loaded.network.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, weights[f"{name}/kernel"])
        np.testing.assert_array_equal(bias, weights[f"{name}/bias"])
    written = json.loads((tmp_path / "models" / "srcnn-mr-x2.history.json").read_text())
    assert written["history"]["val_loss"] == [1.1e-3, 1.0e-3]  # this member's, not the other's
    report = written["report"]
    assert report["best_epoch"] == 2 and report["sha256"] == loaded.sha256
    assert report["updates"] == 5120 and report["train_groups"] == ["0123456789ab"]
    assert (tmp_path / "models" / "srcnn-mr-x2.loss.png").stat().st_size > 1000
