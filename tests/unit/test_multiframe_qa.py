"""QA judges a multi-frame image by a spread sample of its frames, not by its middle one alone
(`pipeline.scoring.score`): an XA run whose first frames a method ruined was "QA ok" and went to
the PACS with qa_action = "hold"."""

from dataclasses import replace

import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.imaging.metrics import ImageMetrics
from dicomnode.imaging.outcome import ImageOutcome
from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import QaThresholds, QaVerdict
from dicomnode.pipeline.scoring import QA_FRAMES, scorable, score, scored_source
from dicomnode.pipeline.sources import SourceImage

FRAMES = 24


def xa_run(blank: tuple[int, ...] = ()) -> SourceImage:
    """A 24-frame, 10-bit XA-like run: a disc of contrast on a noisy background; the frames
    in `blank` (0-based) all zero, as a run's empty frames are."""
    rows, cols = np.mgrid[:64, :64]
    disc = (rows - 32) ** 2 + (cols - 32) ** 2 < 20**2
    noise = np.random.default_rng(0).normal(0, 8, (FRAMES, 64, 64))
    pixels = np.clip(np.where(disc, 600, 300) + noise, 0, 1023).astype(np.uint16)
    pixels[list(blank)] = 0
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


def test_a_blank_middle_frame_is_passed_over_for_the_nearest_frame_that_is_not() -> None:
    """The run was declined whole as "blank: every pixel has the same value", which it was not:
    only its middle frame (13 of 24) was empty."""
    middle = FRAMES // 2
    source = xa_run(blank=(middle,))
    kept, declined = scorable([source], 1)
    assert kept == [source] and declined == ()
    scored = scored_source(source)
    assert scored.frame == middle - 1  # the nearest (of the two, the earlier)
    output = source.image.values.copy()
    output[middle - 1] += 50.0  # the scored frame changed: its scores say so
    fidelity, _ = score(scored, output, QaThresholds())
    assert fidelity.psnr_db < 40
    _, untouched = score(scored, source.image.values.copy(), QaThresholds())
    assert untouched.verdict == "ok"


def test_a_run_blank_in_every_frame_is_declined_as_blank() -> None:
    kept, [declined] = scorable([xa_run(blank=tuple(range(FRAMES)))], 1)
    assert kept == [] and "blank: every pixel" in declined.reason


def test_the_scored_frame_is_kept_with_the_outcome_in_dicom_numbering() -> None:
    outcome = ImageOutcome("1.2", "1.3", ImageMetrics(40.0, 0.99, 100.0), None, QaVerdict("ok", ()))
    assert "scored_frame" not in outcome.as_dict()  # a single frame's record as it always was
    assert ImageOutcome.from_dict(outcome.as_dict()) == outcome
    multi = replace(outcome, scored_frame=11)
    assert multi.as_dict()["scored_frame"] == 12
    assert ImageOutcome.from_dict(multi.as_dict()) == multi
