"""`dicomnode enhance`: the job pipeline, offline, from a folder of DICOM files to a folder."""

from pathlib import Path
from typing import Annotated

import typer

from dicomnode.cli.common import (
    ConfigOption,
    configure_logging,
    console,
    error_console,
    fail,
    reported_errors,
    settings_from,
)
from dicomnode.cli.safe_text import shown


def enhance(
    in_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of DICOM files (searched recursively).", exists=True, file_okay=False
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(help="Folder for derived series, SRs and figures.")],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method", "-m", help="srcnn or baseline; repeat for both (default: config)."
        ),
    ] = None,
    scale: Annotated[
        int | None, typer.Option(min=1, max=4, help="1: restoration; 2-4: upscaling.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Enhance every series under IN_DIR like a job would, writing to OUT_DIR.

    Per series and method: a derived series (`<series UID>/<SOP UID>.dcm`) and its metrics SR;
    for the whole run: metrics.csv (one row per image and method) and comparison.png. A series
    that cannot be enhanced gets one line with its reason and the others go on; the exit code
    is then 1. A series with nothing to enhance (a report, colour images, a modality not
    enabled) is skipped with its reason; when no series at all is enhanced, the exit code is 1.
    """
    from dataclasses import replace

    configure_logging("WARNING")
    settings = settings_from(config)
    enhance_settings = replace(
        settings.enhance,
        methods=list(method) if method else settings.enhance.methods,
        scale=scale or settings.enhance.scale,
    )
    with reported_errors():
        enhance_settings.validate()
    settings = replace(settings, enhance=enhance_settings)
    if not settings.enhance.methods:
        fail("no method: pass --method srcnn or --method baseline", 2)

    from rich.progress import track

    from dicomnode.errors import DicomNodeError
    from dicomnode.imaging.outcome import NOTHING_DERIVED, TOO_LARGE
    from dicomnode.pipeline.enhancement import enhance_series
    from dicomnode.pipeline.methods import methods_for
    from dicomnode.pipeline.offline import (
        comparison_figure,
        describe,
        file_sink,
        metrics_rows,
        series_in,
        write_metrics_csv,
    )

    with reported_errors():
        series = series_in(in_dir)
        if not series:
            fail(f"{in_dir}: no DICOM files found")
        methods = methods_for(settings)
        out_dir.mkdir(parents=True, exist_ok=True)
        sink = file_sink(out_dir)
        rows = []
        failed: list[str] = []
        for index, (series_uid, inputs) in enumerate(
            track(sorted(series.items()), description="enhancing", console=error_console)
        ):
            try:
                outcome = enhance_series(index, inputs, settings, methods, sink).outcome
            except Exception as exc:  # one series' failure must not stop the others
                reason = str(exc) if isinstance(exc, DicomNodeError) else _internal(exc)
                error_console.print(
                    f"series {shown(series_uid)}: failed: {shown(reason)}", soft_wrap=True
                )
                failed.append(series_uid)
                continue
            for declined in outcome.declined:
                error_console.print(f"not enhanced: {shown(declined.reason)}", soft_wrap=True)
            if not outcome.done:
                error_console.print(
                    f"series {shown(series_uid)}: {shown(outcome.status)}", soft_wrap=True
                )
                if outcome.status == NOTHING_DERIVED or TOO_LARGE in outcome.status:
                    failed.append(series_uid)
                continue
            for method_outcome in outcome.methods:
                console.print(shown(describe(series_uid, method_outcome, out_dir)), soft_wrap=True)
            if not rows:
                comparison_figure(inputs, outcome.methods, out_dir, out_dir / "comparison.png")
            rows.extend(metrics_rows(series_uid, outcome.methods))
        write_metrics_csv(rows, out_dir / "metrics.csv")
    if failed:
        fail(f"{len(failed)} of {len(series)} series could not be enhanced (see above)")
    if not rows:
        fail(f"none of the {len(series)} series has an image that could be enhanced (see above)")


def _internal(exc: Exception) -> str:
    """An unexpected error in one line (the traceback is for `--debug` runs of the node)."""
    return f"internal error: {type(exc).__name__}: {exc}"
