"""The enhancement records: series summaries and the do-no-harm reasons."""

import pytest

from dicomnode.imaging.metrics import ImageMetrics
from dicomnode.imaging.outcome import (
    ImageOutcome,
    MethodOutcome,
    SeriesOutcome,
    self_check_reference,
)
from dicomnode.imaging.qa import QaVerdict


def method(gains: list[float | None], verdicts: list[str] | None = None) -> MethodOutcome:
    verdicts = verdicts or ["ok"] * len(gains)
    reasons = {"ok": (), "warn": ("noise ratio 1.6 > 1.5",), "fail": ("drift fraction 0.1 > 0.05",)}
    images = tuple(
        ImageOutcome(
            f"1.{i}", f"2.{i}", ImageMetrics(40.0 + i, 0.9, 100.0), gain, QaVerdict(v, reasons[v])
        )
        for i, (gain, v) in enumerate(zip(gains, verdicts, strict=True))
    )
    return MethodOutcome("srcnn", "v", None, 1, "CPU", "2.9", "2.8", "2.7", images)


def test_series_means_are_those_of_the_reported_numbers() -> None:
    outcome = method([0.5, 1.0, None])
    assert outcome.psnr_mean_db == 41.0 and outcome.ssim_mean == 0.9
    assert outcome.self_check_gain_mean_db == 0.75  # images without a self-check left out


@pytest.mark.parametrize(
    ("gains", "verdicts", "expected"),
    [
        ([0.5, 0.2], ["ok", "warn"], []),
        ([1.0, -0.8], None, []),  # the mean gains, one image slightly worse: tolerated
        ([-0.2, 0.1], None, ["self-check mean gain -0.05 dB < +0.00 dB"]),
        (
            [2.0, -1.5],
            None,
            ["self-check gain below -1.00 dB on 1 of 2 checked image(s) (worst -1.50 dB)"],
        ),
        (
            [None, None],
            ["ok", "fail"],
            [
                "QA verdict 'fail' on 1 of 2 images (the first: drift fraction 0.1 > 0.05, "
                "qa.drift_fraction_fail)"
            ],
        ),
    ],
)
def test_do_no_harm_names_every_reason_not_to_trust_a_derived_series(
    gains: list[float | None], verdicts: list[str] | None, expected: list[str]
) -> None:
    assert list(method(gains, verdicts).harm(0.0, -1.0)) == expected


def test_a_series_outcome_survives_its_json_form() -> None:
    outcome = SeriesOutcome("done", 0.5, (), (method([0.5, -0.2]),))
    assert SeriesOutcome.from_dict(outcome.as_dict()) == outcome


def test_the_self_check_names_its_reference_by_scale() -> None:
    """At x1 nothing is upsampled: the gain is over the degraded image itself, which the
    derived images' comments called bicubic."""
    assert self_check_reference(1) == "the degraded input"
    assert self_check_reference(2) == self_check_reference(4) == "bicubic"
