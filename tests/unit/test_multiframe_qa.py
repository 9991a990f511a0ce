"""QA and the self-check judge a multi-frame image by a spread sample of its frames, not by its
middle one alone (`pipeline.scoring.score`, `self_check_frames`): an XA run whose first frames
a method ruined was "QA ok" and went to the PACS with qa_action = "hold", and its self-check
said nothing of those frames."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.config import EnhanceSettings, Settings
from dicomnode.imaging.enhance import revised
from dicomnode.imaging.metrics import ImageMetrics, sampled_indices
from dicomnode.imaging.outcome import ImageOutcome, MethodOutcome, mean_gain
from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import QaThresholds, QaVerdict
from dicomnode.pipeline.derived_output import image_comment
from dicomnode.pipeline.scoring import (
    QA_FRAMES,
    ScoredSources,
    scorable,
    score,
    scored_source,
    self_check_frames,
    self_check_gains,
)
from dicomnode.pipeline.sources import SourceImage

FRAMES = 24


def xa_run(
    blank: tuple[int, ...] = (), frames: int = FRAMES, bolus: tuple[int, ...] = ()
) -> SourceImage:
    """A 24-frame, 10-bit XA-like run: a disc of contrast on a noisy background; the frames
    in `blank` (0-based) all zero, as a run's empty frames are, those in `bolus` with a disc
    twice the area."""
    rows, cols = np.mgrid[:64, :64]
    radius = np.where(np.isin(np.arange(frames), bolus), 28, 20)[:, None, None]
    disc = (rows - 32) ** 2 + (cols - 32) ** 2 < radius**2
    noise = np.random.default_rng(0).normal(0, 8, (frames, 64, 64))
    pixels = np.clip(np.where(disc, 600, 300) + noise, 0, 1023).astype(np.uint16)
    pixels[list(blank)] = 0
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID, ds.Modality = generate_uid(), "XA"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 64, 64, frames
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


def test_the_self_check_spreads_its_share_over_a_runs_frames_and_passes_over_blank_ones() -> None:
    assert self_check_frames([xa_run()], 16) == [(0, f) for f in sampled_indices(FRAMES, 16)]
    blank_start = self_check_frames([xa_run(blank=(0, 1, 2))], 8)
    assert blank_start == [(0, f) for f in sampled_indices(FRAMES, 8) if f > 2]
    four = [xa_run() for _ in range(4)]
    assert self_check_frames(four, 16) == [
        (i, f) for i in range(4) for f in sampled_indices(FRAMES, 4)
    ]
    # 0 (every image): a run on up to QA_FRAMES of its frames, not on hundreds
    assert self_check_frames([xa_run(frames=40)], 0) == [(0, f) for f in sampled_indices(40, 16)]
    # What does not divide goes to the first ones: 9 runs share 16 as 2 x 7 and 1 x 2.
    nine = self_check_frames([xa_run() for _ in range(9)], 16)
    assert len(nine) == 16 and [sum(i == n for i, _ in nine) for n in range(9)] == [2] * 7 + [1] * 2


def test_a_series_of_as_many_images_as_the_limit_is_checked_on_each_ones_scored_frame() -> None:
    runs = [xa_run(blank=(FRAMES // 2,)) for _ in range(3)]
    assert self_check_frames(runs, 3) == [(i, FRAMES // 2 - 1) for i in range(3)]
    singles = [xa_run(frames=1) for _ in range(20)]
    assert self_check_frames(singles, 16) == [(i, 0) for i in sampled_indices(20, 16)]


class BolusNoise:
    """Leaves a stack as it is but for its frames with the large disc (the bolus: over 45 % of
    the frame above its mid-range, however it was normalised), which it ruins with noise: a
    method that harms some frames of a run only."""

    name, version = "bolus-noise", revised("bolus-noise-1")
    scale, device, model_sha256 = 1, "CPU", None

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        low, high = stack.min(axis=(1, 2)), stack.max(axis=(1, 2))
        above = (stack > ((low + high) / 2)[:, None, None]).mean(axis=(1, 2))
        noise = np.random.default_rng(1).normal(0, 0.2, stack.shape)
        return np.where((above > 0.45)[:, None, None], stack + noise, stack).astype(np.float32)


def test_frames_a_method_ruins_away_from_the_middle_make_the_self_check_say_harm() -> None:
    """Before, the run's middle frame alone was checked: gain 0.00 dB, no harm found."""
    run = xa_run(bolus=tuple(range(6)))
    settings = Settings(enhance=EnhanceSettings(self_check_images=16))
    with ThreadPoolExecutor(1) as scoring:
        checked = self_check_gains([run], ScoredSources([run]), BolusNoise(), settings, scoring)
        [frames] = checked.result()
    assert [f.frame for f in frames] == sampled_indices(FRAMES, 16)
    ruined = {f.frame for f in frames if f.gain_db < -1.0}
    assert ruined == {f for f in sampled_indices(FRAMES, 16) if f < 6}
    assert all(abs(f.gain_db) < 0.01 for f in frames if f.frame >= 6)

    image = ImageOutcome(
        run.sop,
        "1.3",
        ImageMetrics(40.0, 0.99, 100.0),
        mean_gain(frames),
        QaVerdict("ok", ()),
        scored_frame=run.scored_frame,
        self_check_frames=frames,
    )
    outcome = MethodOutcome(
        "bolus-noise", BolusNoise.version, None, 1, "CPU", "1.4", "1.5", "1.6", (image,)
    )
    mean, below = outcome.harm(0.0, -1.0)
    assert mean.startswith("self-check mean gain -")  # 4 of 16 frames at about -8 dB
    assert below.startswith(f"self-check gain below -1.00 dB on {len(ruined)} of 16 checked frames")
    assert outcome.self_check_text.endswith("on 16 frames of 1 of 1 images")
    assert outcome.as_dict()["self_check_frames"] == 16
    assert outcome.as_dict()["self_check_images"] == 1
    assert ImageOutcome.from_dict(image.as_dict()) == image
    worst = min(frames, key=lambda f: f.gain_db)
    assert image.as_dict()["self_check_frames"][0] == {"frame": 1, "gain_db": frames[0].gain_db}
    assert f"worst {worst.gain_db:+.2f} dB in frame {worst.frame + 1})" in image_comment(
        BolusNoise(), image
    )
