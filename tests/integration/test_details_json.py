"""The job's `details` JSON is a contract (`jobs show --json`, scripts, the README): a refactor
must leave it as it was. The golden document (`tests/data/enhancement_details.json`) was first
written by the code before the enhancement records existed; it is written again (run this file)
only when what a method computes changes on purpose, in the commit that changes it (so far:
SRCNN's mirrored borders; the pixel revision that ends every version, and so every derived UID,
`enhance.PIXEL_REVISION`; the metrics report's UID, which names the images it covers). Timings
are not compared."""

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnode.config import Settings
from dicomnode.pipeline.enhancement import enhance_series
from dicomnode.pipeline.methods import methods_for
from dicomnode.pipeline.offline import file_sink, series_in

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "enhancement_details.json"
UID = "1.2.826.0.1.3680043.10.1"


def write_fixed_series(folder: Path, count: int = 4) -> None:
    """A small CT series with fixed UIDs from pydicom's CT_small, so derived UIDs are stable."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    base = template.pixel_array.astype(np.int32)
    folder.mkdir(parents=True)
    for index in range(count):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = UID, f"{UID}.1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID}.1.{index + 1}"
        ds.InstanceNumber = index + 1
        ds.PixelData = np.roll(base, 3 * index, axis=1).astype(np.int16).tobytes()
        if index == count - 1:
            ds.HighBit = 3  # declined: the job's "skipped" list is part of the contract too
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)


def details_of(tmp_path: Path) -> dict[str, Any]:
    write_fixed_series(tmp_path / "in")
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, methods=["baseline", "srcnn"]))
    ((_, inputs),) = series_in(tmp_path / "in").items()
    methods = methods_for(settings)
    output = enhance_series(1, inputs, settings, methods, file_sink(tmp_path / "out"))
    return json.loads(json.dumps(output.outcome.as_dict()))


def assert_same(actual: Any, expected: Any, where: str = "details") -> None:
    """Equal structure, keys, strings and verdicts; numbers within 1e-3 (CPU rounding)."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key, value in expected.items():
            if key not in ("timings", "load_s"):
                assert_same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert isinstance(actual, int | float), where
        assert math.isclose(actual, expected, abs_tol=1e-3), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_the_details_json_of_an_enhanced_series_is_what_it_was(tmp_path: Path) -> None:
    assert_same(details_of(tmp_path), json.loads(GOLDEN.read_text()))


def test_jobs_show_reads_back_the_record_it_was_written_from(tmp_path: Path) -> None:
    from dicomnode.imaging.outcome import SeriesOutcome

    details = details_of(tmp_path)
    assert SeriesOutcome.from_dict(details).as_dict() == details


if __name__ == "__main__":  # regenerate on purpose, when what a method computes changes
    import tempfile

    document = details_of(Path(tempfile.mkdtemp()))
    document["load_s"] = 0.0
    for entry in document["methods"]:
        entry["timings"] = {key: 0.0 for key in entry["timings"]}
    GOLDEN.write_text(json.dumps(document, indent=1) + "\n")
