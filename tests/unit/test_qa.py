"""QA verdicts: over-enhancement and broken output are flagged, an untouched image is not."""

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from skimage.filters import unsharp_mask

from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import assess

LIMITS = (-32768.0, 32767.0)


def ct() -> np.ndarray:
    return to_modality(dcmread(get_testdata_file("CT_small.dcm"))).values[0]


def test_untouched_image_is_ok() -> None:
    result = assess(ct(), ct(), limits=LIMITS)
    assert result.verdict == "ok" and result.reasons == ()
    assert result.measures["sharpness_ratio"] == 1.0


def test_over_sharpened_image_is_flagged() -> None:
    image = ct()
    sharpened = unsharp_mask(image, radius=1, amount=4, preserve_range=True)
    result = assess(image, sharpened, limits=LIMITS)
    assert result.verdict in ("warn", "fail")
    assert any(reason.startswith("sharpness ratio") for reason in result.reasons)


def test_intensity_drift_fails() -> None:
    image = ct()
    result = assess(image, image + 0.1 * (image.max() - image.min()), limits=LIMITS)
    assert result.verdict == "fail"
    assert any(reason.startswith("drift fraction") for reason in result.reasons)


def test_nan_output_fails_naming_the_count() -> None:
    output = ct()
    output[0, :3] = np.nan
    result = assess(ct(), output, limits=LIMITS)
    assert result.verdict == "fail" and result.reasons == ("3 NaN/infinite pixels",)
