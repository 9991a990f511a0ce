"""Turn the weights `scripts/train_on_gpu.py` saved into the `.keras` model the node loads.

    python scripts/gpu_weights_to_keras.py RUN/seed0-lr0.001.npz --scale 2 \
        --out models/srcnn-mr-x2.keras

Builds `build_srcnn(scale)`, sets each layer's kernel and bias from the file (the same layout:
height, width, in, out), saves it, and writes `<stem>.history.json` in `dicomnode train`'s form
(the report and, per checkpoint, loss, validation loss and learning rate) from the run's
`history.json` beside the weights, and the loss curve.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicomnode.imaging.srcnn import LAYERS, build_srcnn, file_sha256
from dicomnode.training.figures import plot_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--modality", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    saved = np.load(args.weights)
    model = build_srcnn(args.scale)
    for index in range(len(LAYERS)):
        name = f"conv{index + 1}"
        model.get_layer(name).set_weights([saved[f"{name}/kernel"], saved[f"{name}/bias"]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)

    run = json.loads((args.weights.parent / "history.json").read_text())
    member = str(saved["member"])
    which = next(n for n, m in enumerate(run["checkpoints"][0]["members"]) if m["name"] == member)
    per_checkpoint = [c["members"][which] for c in run["checkpoints"]]
    history = {key: [c[key] for c in per_checkpoint] for key in ("loss", "val_loss", "lr")}
    best = int(np.argmin(history["val_loss"]))
    report = {
        "model": str(args.out),
        "sha256": file_sha256(args.out),
        "scale": args.scale,
        "modality": args.modality,
        "steps": run["steps"],
        "updates": run["updates"],
        "epochs_run": len(per_checkpoint),
        "best_epoch": best + 1,
        "best_validation_loss": history["val_loss"][best],
        "seconds": run["checkpoints"][-1]["seconds"],
        "device": run["device"],
        "backend": f"jax {run['jax']} (scripts/train_on_gpu.py)",
        "train_images": run["train_images"],
        "validation_images": run["validation_images"],
        "train_groups": run["train_groups"],
        "validation_groups": run["validation_groups"],
        "settings": {"command": run["command"], "batch": run["batch"], "member": member},
    }
    stem = args.out.with_suffix("")
    Path(f"{stem}.history.json").write_text(
        json.dumps({"report": report, "history": history}, indent=2)
    )
    plot_loss(history, Path(f"{stem}.loss.png"), f"SRCNN x{args.scale}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
