"""`jobs show` tells why images were not enhanced in a few lines, however many images."""

from dicomnode.cli.jobs import _declined_lines
from dicomnode.imaging.outcome import DeclinedImage

COLOUR = "PhotometricInterpretation=RGB with SamplesPerPixel=3; only grayscale images"


def test_images_declined_for_one_reason_are_one_line_naming_the_first() -> None:
    declined = [DeclinedImage(f"1.2.{n}", f"sop=1.2.{n}: {COLOUR}") for n in range(500)]
    declined.append(DeclinedImage("1.3", "sop=1.3: blank: every pixel has the same value"))
    assert _declined_lines(declined) == [
        f"500 images (sop=1.2.0, ...): {COLOUR}",
        "sop=1.3: blank: every pixel has the same value",
    ]


def test_past_ten_reasons_the_last_line_says_how_many_more() -> None:
    declined = [DeclinedImage(f"1.2.{n}", f"sop=1.2.{n}: reason {n}") for n in range(25)]
    lines = _declined_lines(declined)
    assert len(lines) == 10
    assert lines[0] == "sop=1.2.0: reason 0" and lines[8] == "sop=1.2.8: reason 8"
    assert lines[9] == "16 more reasons (see --json)"
