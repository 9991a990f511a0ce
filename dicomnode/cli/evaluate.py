"""`dicomnode evaluate`: score bicubic, the baseline and SRCNN against the originals."""

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from dicomnode.cli.common import (
    ConfigOption,
    configure_logging,
    console,
    error_console,
    reported_errors,
    settings_from,
)
from dicomnode.cli.train import DataDirs


def evaluate(
    data: DataDirs,
    out: Annotated[
        Path, typer.Option(help="Folder for the CSV files, summary.json and comparison.png.")
    ],
    scale: Annotated[
        int,
        typer.Option(min=1, max=4, help="1: restoration (as enhance.scale); 2-4: upscaling."),
    ] = 1,
    model: Annotated[
        Path | None,
        typer.Option(
            help="SRCNN model for every image (default: each modality's own model, "
            "`srcnn-<modality>-xS.keras`, else `srcnn-xS.keras`, in enhance.model_dir)."
        ),
    ] = None,
    linear_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--linear-from",
            help="Training folders to fit the least-squares linear filter on (per modality), "
            "a reference a network must beat; repeatable.",
        ),
    ] = None,
    views: Annotated[
        int | None,
        typer.Option(
            help="SRCNN averaged over 1, 2, 4 or 8 flips/quarter turns of each image; 0: "
            "8 on a GPU, 1 on a CPU (default: enhance.srcnn_views, as the node runs it).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    nearest: Annotated[
        bool, typer.Option(help="Also score nearest-neighbour (a method that must lose).")
    ] = False,
    examples: Annotated[int, typer.Option(min=1, help="Images in comparison.png.")] = 3,
    config: ConfigOption = None,
) -> None:
    """Degrade each image, restore it with every method, score against the original.

    Writes metrics_per_image.csv, metrics_summary.csv, summary.json (what --json prints) and
    comparison.png to OUT. PSNR uses the original's max - min (padding excluded) as data_range;
    `scale` border pixels are shaved.
    Summaries per modality, plane and patient (a cluster bootstrap over patients), with the
    worst image.
    """
    from dicomnode.imaging.symmetry import AUTO, VIEW_COUNTS, views_for

    if views not in (None, AUTO, *VIEW_COUNTS):
        raise typer.BadParameter("must be 0 (auto), 1, 2, 4 or 8", param_hint="--views")
    configure_logging("WARNING")
    settings = settings_from(config)
    from rich.progress import track

    from dicomnode.imaging.degrade import Degradation
    from dicomnode.imaging.srcnn import load_model, select_device
    from dicomnode.pipeline.methods import baseline_params
    from dicomnode.registry import SRCNN
    from dicomnode.training.corpus import load_images
    from dicomnode.training.evaluate import (
        ANY,
        evaluate_image,
        standard_methods,
        summarize_rows,
        write_per_image_csv,
        write_summary_csv,
    )
    from dicomnode.training.figures import plot_comparison
    from dicomnode.training.linear import fit_linear_filter

    with reported_errors():
        images = load_images(data)
        degradation = Degradation(scale=scale)
        enhance = replace(settings.enhance, scale=scale)
        wanted = enhance.srcnn_views if views is None else views
        srcnn_views = views_for(wanted, on_gpu=select_device().startswith("/GPU"))
        paths = (
            {ANY: model}
            if model
            else {
                modality: SRCNN.model_for(enhance, modality)
                for modality in sorted({image.modality for image in images})
            }
        )
        loaded = {key: load_model(path) for key, path in paths.items()}
        linear = None
        if linear_from:
            training = load_images(linear_from)
            linear = {
                modality: fit_linear_filter(
                    [i for i in training if i.modality == modality], degradation
                )
                for modality in sorted({i.modality for i in training})
            }
            _require_a_filter_for_each_modality(images, linear, linear_from)
        methods = standard_methods(
            scale,
            model=loaded,
            baseline=baseline_params(settings),
            linear=linear,
            include_nearest=nearest,
            views=srcnn_views,
        )
        rows, shown = [], []
        picks = _example_indices(images, examples)
        for index, image in enumerate(
            track(images, description="evaluating", console=error_console, transient=True)
        ):
            outputs = evaluate_image(image, scale, methods, degradation)
            rows.extend(outputs.rows)
            if index in picks:
                shown.append(outputs)
        summary = summarize_rows(rows)
        out.mkdir(parents=True, exist_ok=True)
        write_per_image_csv(rows, out / "metrics_per_image.csv")
        write_summary_csv(summary, out / "metrics_summary.csv")
        plot_comparison(shown, out / "comparison.png", scale)
    result = {
        "scale": scale,
        "srcnn_views": srcnn_views,
        "models": {
            key: {"path": str(one.path), "sha256": one.sha256} for key, one in loaded.items()
        },
        # what was scored, as typer parsed it: `--linear-from a b` makes b a test folder
        "evaluated": [str(p) for p in data],
        "linear_fitted_on": [str(p) for p in linear_from or []],
        "degradation": vars(degradation),
        "data_range": "original max - min over non-padding pixels, modality units",
        "shave_px": scale if scale > 1 else 0,
        "methods": summary,
    }
    text = json.dumps(_defined(result), indent=2, allow_nan=False)
    (out / "summary.json").write_text(text)
    if as_json:
        print(text)
    else:
        _print_table(summary, data)


def _defined(value: Any) -> Any:
    """`value` with null for each number that is not (a one-patient interval is NaN): JSON has
    no NaN, and strict parsers (JavaScript's, jq) refused the whole summary."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _defined(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_defined(item) for item in value]
    return value


def _require_a_filter_for_each_modality(
    images: list[Any], filters: dict[str, Any], folders: list[Path]
) -> None:
    """The linear filter is fitted per modality: one evaluated without its own is refused
    before any scoring, naming what is missing (not a KeyError halfway through)."""
    missing = sorted({image.modality for image in images} - filters.keys())
    if missing:
        named = ", ".join(str(folder) for folder in folders)
        raise typer.BadParameter(
            f"no {'/'.join(missing)} images in {named}: the linear filter is fitted per "
            "modality, so each modality evaluated needs training images (repeat --linear-from "
            "for each training folder)",
            param_hint="--linear-from",
        )


def _example_indices(images: list, count: int) -> set[int]:
    """The first image of each modality, then evenly spaced others, up to `count`."""
    first: dict[str, int] = {}
    for index, image in enumerate(images):
        first.setdefault(image.modality, index)
    picks = list(first.values())[:count]
    step = max(1, len(images) // max(1, count))
    for index in range(0, len(images), step):
        if len(picks) >= count:
            break
        if index not in picks:
            picks.append(index)
    return set(picks)


def _print_table(summary: dict[str, Any], data: list[Path]) -> None:
    from rich.table import Table

    from dicomnode.training.evaluate import subsets

    table = Table(
        "method",
        "subset",
        "n",
        "pat.",
        "PSNR dB",
        "SSIM",
        "gain dB",
        "95 % CI",
        "CI by patient",
        "worst",
        "SSIM gain",
        title="scored: " + ", ".join(str(folder) for folder in data),
    )
    for method, entry in summary.items():
        for subset, values in subsets(entry):
            low, high = values["gain_ci95"]
            p_low, p_high = values["gain_ci95_by_patient"]
            table.add_row(
                method,
                subset,
                str(values["n_images"]),
                str(values["n_patients"]),
                f"{values['psnr_mean']:.2f}",
                f"{values['ssim_mean']:.4f}",
                f"{values['gain_db_vs_bicubic']:+.2f}",
                f"[{low:+.2f}, {high:+.2f}]",
                # one patient: no interval over patients
                "—" if math.isnan(p_low) else f"[{p_low:+.2f}, {p_high:+.2f}]",
                f"{values['worst_gain_db']:+.2f}",
                f"{values['ssim_gain_vs_bicubic']:+.4f}",
            )
    console.print(table)
