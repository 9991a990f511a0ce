"""PNG figures for people: the training loss curve and the side-by-side comparison.

matplotlib is imported inside each function (Agg backend, no display needed).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dicomnode.training.evaluate import ImageOutputs


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(history: dict[str, list[float]], path: Path, title: str) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history["loss"]) + 1)
    axes.semilogy(epochs, history["loss"], label="training")
    if "val_loss" in history:
        axes.semilogy(epochs, history["val_loss"], label="validation")
    axes.set_xlabel("epoch")
    axes.set_ylabel("MSE (working range)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_comparison(examples: Sequence[ImageOutputs], path: Path, scale: int) -> None:
    """original | degraded | each method | |last method - original|, one row per image.

    Every panel of a row shares one window (the original's 1st-99th percentile), so differences
    in brightness are real; the error panel has its own scale, given in its title.
    """
    plt = _pyplot()
    columns = 3 + len(examples[0].restored)
    figure, axes = plt.subplots(
        len(examples), columns, figsize=(2.6 * columns, 2.9 * len(examples)), squeeze=False
    )
    for row, example in zip(axes, examples, strict=True):
        reference = example.reference
        low, high = np.percentile(reference, [1, 99])
        by_method = {r.method: r for r in example.rows}
        last = list(example.restored)[-1]
        panels = [
            ("original", reference, ""),
            (f"degraded (x{scale})" if scale > 1 else "degraded", example.degraded, ""),
            *[
                (
                    name,
                    image,
                    f"\n{by_method[name].psnr_db:.2f} dB, SSIM {by_method[name].ssim:.3f}",
                )
                for name, image in example.restored.items()
            ],
        ]
        for axis, (title, image, numbers) in zip(row, panels, strict=False):
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axis.set_title(title + numbers, fontsize=8)
        error = np.abs(example.restored[last] - reference)
        top = float(np.percentile(error, 99.5)) or 1.0
        row[-1].imshow(error, cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        row[-1].set_title(f"|{last} - original|\n0 .. {top:.0f}", fontsize=8)
        row[0].set_ylabel(f"{example.image.modality} {example.image.name}", fontsize=7)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_enhanced(
    source: np.ndarray, outputs: dict[str, np.ndarray], path: Path, title: str
) -> None:
    """source | each method's output | |output - source| per method, in the source's window."""
    plt = _pyplot()
    columns = 1 + 2 * len(outputs)
    figure, axes = plt.subplots(1, columns, figsize=(2.8 * columns, 3.2), squeeze=False)
    row = axes[0]
    low, high = np.percentile(source, [1, 99])
    row[0].imshow(source, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    row[0].set_title("source", fontsize=8)
    for index, (name, image) in enumerate(outputs.items()):
        shown = (
            image
            if image.shape == source.shape
            else image[:: image.shape[0] // source.shape[0], :: image.shape[1] // source.shape[1]]
        )
        row[1 + index].imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        row[1 + index].set_title(name, fontsize=8)
        error = np.abs(shown - source)
        top = float(np.percentile(error, 99.5)) or 1.0
        axis = row[1 + len(outputs) + index]
        axis.imshow(error, cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        axis.set_title(f"|{name} - source| 0 .. {top:.0f}", fontsize=8)
    for axis in row:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
