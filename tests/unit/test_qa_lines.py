"""`jobs show` says why QA did not pass a method's images, not only "warn" or "fail"."""

from dicomnode.cli.jobs import _qa_lines
from dicomnode.imaging.metrics import ImageMetrics
from dicomnode.imaging.outcome import ImageOutcome, MethodOutcome
from dicomnode.imaging.qa import QaVerdict


def _method(verdicts: list[QaVerdict]) -> MethodOutcome:
    images = tuple(
        ImageOutcome(f"1.2.{n}", f"1.3.{n}", ImageMetrics(40.0, 0.98, 1000.0), None, verdict)
        for n, verdict in enumerate(verdicts)
    )
    return MethodOutcome("baseline", "1", None, 1, "cpu", "1.4", "1.5", "1.6", images)


def test_the_worst_verdict_is_counted_and_its_first_images_reasons_told() -> None:
    sharp = QaVerdict("warn", ("sharpness ratio 2.83 > 2.0",))
    ok = QaVerdict("ok", ())
    assert _qa_lines(_method([ok, sharp, QaVerdict("warn", ("x",)), ok])) == [
        "QA baseline: warn on 2 of 4 images, e.g. sop=1.2.1: sharpness ratio 2.83 > 2.0"
    ]
    failed = QaVerdict("fail", ("mean shifted by 310 HU", "sharpness ratio 6.1 > 4.0"))
    assert _qa_lines(_method([sharp, failed])) == [
        "QA baseline: fail on 1 of 2 images, e.g. sop=1.2.1: mean shifted by 310 HU; "
        "sharpness ratio 6.1 > 4.0"
    ]


def test_a_method_whose_images_all_pass_says_nothing_more() -> None:
    assert _qa_lines(_method([QaVerdict("ok", ()), QaVerdict("ok", ())])) == []
