"""QA judges a multi-frame image by a spread sample of its frames, not by its middle one alone
(`pipeline.scoring.score`): an XA run whose first frames a method ruined was "QA ok" and went to
the PACS with qa_action = "hold"."""

import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import QaThresholds
from dicomnode.pipeline.scoring import QA_FRAMES, score, scored_source
from dicomnode.pipeline.sources import SourceImage

FRAMES = 24


def xa_run() -> SourceImage:
    """A 24-frame, 10-bit XA-like run: a disc of contrast on a noisy background."""
    rows, cols = np.mgrid[:64, :64]
    disc = (rows - 32) ** 2 + (cols - 32) ** 2 < 20**2
    noise = np.random.default_rng(0).normal(0, 8, (FRAMES, 64, 64))
    pixels = np.clip(np.where(disc, 600, 300) + noise, 0, 1023).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID, ds.Modality = generate_uid(), "XA"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 64, 64, FRAMES
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 10, 9, 0
    ds.PixelData = pixels.tobytes()
    return SourceImage(ds, to_modality(ds))


def test_a_method_that_ruins_frames_away_from_the_middle_fails_qa_naming_them() -> None:
    source = xa_run()
    scored = scored_source(source)
    assert len(scored.other_frames) == QA_FRAMES - 1
    output = source.image.values.copy()
    # the first frames driven to the limits and sharpened: as a method that ruined them
    output[:6] = np.where(output[:6] > 450, 1023.0, 0.0)
    fidelity, verdict = score(scored, output, QaThresholds())
    assert verdict.verdict == "fail", verdict
    assert any(reason.startswith("frame 1 of 24: ") for reason in verdict.reasons)
    assert not any("frame 13 " in reason for reason in verdict.reasons)  # the middle: untouched
    assert fidelity.ssim == 1.0  # the scored middle frame is unchanged


def test_an_unchanged_run_passes() -> None:
    source = xa_run()
    _, verdict = score(scored_source(source), source.image.values.copy(), QaThresholds())
    assert verdict.verdict == "ok" and verdict.reasons == ()
