"""`dicomnode enhance`: the job pipeline, offline, from a folder of DICOM files to a folder."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dicomnode.cli.common import (
    ConfigOption,
    configure_logging,
    console,
    error_console,
    fail,
    os_error_text,
    reported_errors,
    settings_from,
    writable_folder,
)
from dicomnode.cli.safe_text import shown

if TYPE_CHECKING:
    from dicomnode.config import Settings
    from dicomnode.db import SpooledInstance
    from dicomnode.imaging.outcome import MethodOutcome
    from dicomnode.pipeline.derived_output import Sink
    from dicomnode.pipeline.methods import MethodsFor


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
        int | None,
        typer.Option(
            min=1, max=4, help="1: restoration; 2-4: upscaling (default: config, enhance.scale)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Enhance every series under IN_DIR like a job would, writing to OUT_DIR.

    Per series and method: a derived series (`<series UID>/<SOP UID>.dcm`) and its metrics SR;
    for the whole run: metrics.csv (one row per image and method; an earlier run's rows for
    other series or methods stay) and comparison.png. A series
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
    from dicomnode.errors import ConfigError

    with reported_errors():
        try:
            enhance_settings.validate()
        except ConfigError as exc:
            prefix = "setting enhance.methods: "
            if method and str(exc).startswith(prefix):  # the option's mistake, not the file's
                raise typer.BadParameter(str(exc)[len(prefix) :], param_hint="--method") from None
            raise
    settings = replace(settings, enhance=enhance_settings)
    if not settings.enhance.methods:
        fail("no method: pass --method srcnn or --method baseline", 2)

    from rich.progress import track

    from dicomnode.pipeline.methods import methods_for
    from dicomnode.pipeline.offline import (
        comparison_figure,
        file_sink,
        merge_metrics_csv,
        metrics_rows,
        series_in,
    )
    from dicomnode.pipeline.sources import modality_of
    from dicomnode.registry import check_models

    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    done = 0
    series: dict[str, list[SpooledInstance]] = {}
    try:
        with reported_errors():
            series = series_in(in_dir)
            if not series:
                fail(f"{in_dir}: no DICOM files found")
            writable_folder(out_dir)  # before the work, not after it
            # Before any work, as `serve` does: the model of each modality there is to enhance.
            present = {modality_of(inputs) for inputs in series.values()}
            wanted = [m for m in settings.enhance.modalities if m in present]
            check_models(replace(settings, enhance=replace(settings.enhance, modalities=wanted)))
            methods = methods_for(settings)
            sink = file_sink(out_dir)
            for index, (series_uid, inputs) in enumerate(
                track(sorted(series.items()), description="enhancing", console=error_console)
            ):
                made = _enhance_one(index, series_uid, inputs, settings, methods, sink, out_dir)
                if made is None:
                    failed.append(series_uid)
                elif made:
                    if not rows:
                        comparison_figure(inputs, made, out_dir, out_dir / "comparison.png")
                    rows.extend(metrics_rows(series_uid, made))
                done += 1
            merge_metrics_csv(rows, out_dir / "metrics.csv")
    except KeyboardInterrupt:
        if rows:
            merge_metrics_csv(rows, out_dir / "metrics.csv")
        fail(
            f"interrupted after {done} of {len(series) or '?'} series: metrics.csv has the rows "
            f"of those it enhanced; the series it was enhancing may be incomplete in {out_dir}"
        )
    if failed:
        fail(f"{len(failed)} of {len(series)} series could not be enhanced (see above)")
    if not rows:
        fail(f"none of the {len(series)} series has an image that could be enhanced (see above)")


def _enhance_one(
    index: int,
    series_uid: str,
    inputs: "list[SpooledInstance]",
    settings: "Settings",
    methods: "MethodsFor",
    sink: "Sink",
    out_dir: Path,
) -> "tuple[MethodOutcome, ...] | None":
    """One series as a job would enhance it, told on the console: what each method made, or
    () when there was nothing to enhance, or None when it failed (the others go on)."""
    from dicomnode.errors import DicomNodeError
    from dicomnode.imaging.outcome import NOTHING_DERIVED, TOO_LARGE
    from dicomnode.pipeline.enhancement import enhance_series
    from dicomnode.pipeline.offline import describe

    try:
        outcome = enhance_series(index, inputs, settings, methods, sink).outcome
    except Exception as exc:  # one series' failure must not stop the others
        if isinstance(exc, DicomNodeError):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = os_error_text(exc)
        else:
            reason = f"internal error: {type(exc).__name__}: {exc}"
        error_console.print(f"series {shown(series_uid)}: failed: {shown(reason)}", soft_wrap=True)
        return None
    paths = {item.sop_instance_uid: item.path for item in inputs}
    for declined in outcome.declined:
        where = paths.get(declined.sop)
        said = f"{where}: {declined.reason}" if where else declined.reason
        error_console.print(f"not enhanced: {shown(said)}", soft_wrap=True)
    if not outcome.done:
        error_console.print(f"series {shown(series_uid)}: {shown(outcome.status)}", soft_wrap=True)
        return None if outcome.status == NOTHING_DERIVED or TOO_LARGE in outcome.status else ()
    for method_outcome in outcome.methods:
        console.print(shown(describe(series_uid, method_outcome, out_dir)), soft_wrap=True)
    return outcome.methods
