"""`dicomnode train`: train an SRCNN model on folders of DICOM images."""

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dicomnode.cli.common import (
    ConfigOption,
    configure_logging,
    console,
    fail,
    reported_errors,
    settings_from,
    writable_folder,
)


class Start(StrEnum):
    RANDOM = "random"
    LINEAR = "linear"


DataDirs = Annotated[
    list[Path],
    typer.Argument(help="Folders (or files) of DICOM images; searched recursively.", exists=True),
]


def train(
    data: DataDirs,
    scale: Annotated[
        int,
        typer.Option(min=1, max=4, help="1: restoration (as enhance.scale); 2-4: upscaling."),
    ] = 1,
    modality: Annotated[
        str | None,
        typer.Option(help="Train on this modality only (e.g. CT, MR): a per-modality model."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Model file to write "
            "(default: `srcnn[-<modality>]-xS.keras` in enhance.model_dir)."
        ),
    ] = None,
    updates: Annotated[
        int, typer.Option(min=1000, help="Patch updates (steps x batch size of 32).")
    ] = 1_000_000,
    epochs: Annotated[int, typer.Option(min=1, help="Validation checkpoints over the run.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: same seed and data, same model.")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0: all cores).")] = 0,
    soften: Annotated[
        list[float] | None,
        typer.Option(
            min=0.0,
            help="Train on each image blurred by each of these sigmas in px (0: as it is), as "
            "softer reconstruction kernels would make it; repeatable (default: x1 0; x2-4 0, "
            "0.7, 1.2).",
        ),
    ] = None,
    contrast_min: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Half the patches fainter by down to this factor; 1: none (default: x1 1; "
            "x2-4 0.1).",
        ),
    ] = None,
    clean_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Scale 1: this share of the patches undegraded (input = target), so images "
            "as acquired are learnt to be left as they are (default: 0.25).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the model file if there is one (by default the node's)."
        ),
    ] = False,
    start: Annotated[
        Start,
        typer.Option(help="Initial weights: random, or the least-squares linear filter."),
    ] = Start.RANDOM,
    config: ConfigOption = None,
) -> None:
    """Train the 9-1-5 SRCNN; the split is 80/20 by patient, per modality, never by slice.

    Fresh randomly turned patches every batch, a cosine learning rate over the whole run, the
    best validation weights kept; by default the shipped models' recipe for the scale (x2:
    softened and fainter copies too; x1: a quarter of the patches undegraded; see
    models/MODEL_CARD.md). Writes the model, `<stem>.history.json` (settings, split, steps,
    updates, device, time, per-epoch losses and learning rate) and `<stem>.loss.png`. The best
    model so far waits in `<stem>.partial.keras` and replaces the model file when the run ends;
    a model file already there is replaced only with --force.
    """
    configure_logging("WARNING")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomnode.registry import SRCNN
    from dicomnode.training.corpus import load_images
    from dicomnode.training.train import (
        TrainingSettings,
        of_modality,
        partial_model_path,
        train_srcnn,
    )

    augmentation: dict[str, Any] = {}  # what is not given keeps the shipped recipe's
    if soften:
        augmentation["soften_sigmas"] = tuple(soften)
    if contrast_min is not None:
        augmentation["contrast_min"] = contrast_min
    if clean_fraction is not None:
        if clean_fraction and scale != 1:
            raise typer.BadParameter(
                "undegraded patches are for scale 1", param_hint="--clean-fraction"
            )
        augmentation["clean_fraction"] = clean_fraction
    settings = TrainingSettings.shipped(
        scale,
        modality=modality.upper() if modality else None,
        updates=updates,
        epochs=epochs,
        seed=seed,
        threads=threads,
        start=start.value,
        **augmentation,
    )
    node_model = out is None
    out = out or SRCNN.model_file(settings_from(config).enhance, scale, settings.modality)
    if out.suffix != ".keras":  # Keras would write its own format under any other name
        raise typer.BadParameter(f"{out}: a model file's name ends in .keras", param_hint="--out")
    if out.exists() and not force:  # before an hour of training, not after it
        whose = " (the model the node uses)" if node_model else ""
        raise typer.BadParameter(
            f"{out} exists{whose}; name another file with --out, or replace it with --force",
            param_hint="--out",
        )
    batches = settings.steps // settings.epochs
    began = time.time()
    try:
        with reported_errors():
            writable_folder(out.parent)  # before an hour of training, not at its checkpoint
            images = of_modality(load_images(data), settings.modality)
            console.print(f"{len(images)} images from {len(data)} path(s); training x{scale}")
            with Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]:.3g}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("train", total=batches, epoch=1, epochs=epochs, loss=0.0)

                def on_batch(epoch: int, done: int, logs: dict[str, float]) -> None:
                    progress.update(
                        task, completed=done, epoch=epoch + 1, loss=float(logs.get("loss", 0.0))
                    )

                report = train_srcnn(images, out, settings, on_batch)
    except KeyboardInterrupt:
        partial = partial_model_path(out)
        if partial.exists() and partial.stat().st_mtime >= began:
            kept = f"the best model so far is {partial}"
        elif partial.exists():
            kept = f"no checkpoint was reached ({partial} is an earlier run's)"
        else:
            kept = "no checkpoint was reached"
        fail(f"interrupted: {out} was not written; {kept}")
    console.print_json(json.dumps(report.as_dict()))
