"""A MONOCHROME1 image (CR, DX: its lowest value displays white) is the same picture as its
MONOCHROME2 twin stored the other way round: it is enhanced, measured and checked as the twin is.

The network learnt MONOCHROME2 pictures (bright structures on a dark background) and a ReLU
network is not symmetric, so the working range turns a MONOCHROME1 image before the method and
back after it."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, MRImageStorage

from dicomnode.config import Settings
from dicomnode.imaging.enhance import SrcnnMethod, enhance_stack
from dicomnode.imaging.normalize import fill_padding, normalization_for
from dicomnode.pipeline.enhancement import enhance_series
from dicomnode.pipeline.offline import file_sink, series_in
from tests.unit.test_measured_while_enhancing import small_batch_runner, without_timings

TOP = 4095  # 12 bits stored
UID = "1.2.826.0.1.3680043.8.498.4711"


class Uneven:
    """A method that treats dark and bright differently, as a ReLU network does."""

    name, version, scale, device = "uneven", "1", 1, "cpu"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return stack + 0.3 * np.maximum(stack - 0.6, 0.0) ** 2


def picture() -> np.ndarray:
    """An MR-like picture in 100..3000 (CT_small's anatomy), with padding (0) in one corner."""
    base = dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    values = np.rint(100 + (base - base.min()) / np.ptp(base) * 2900)
    values[:20, :20] = 0
    return values.astype(np.float32)


def test_the_working_range_turns_a_monochrome1_image_and_back() -> None:
    image = picture()
    padding = image == 0
    turned = TOP - image
    plain_norm = normalization_for(image, "MR", padding)
    turned_norm = normalization_for(turned, "MR", padding, inverted=True)
    assert turned_norm.inverted and not plain_norm.inverted
    # The padding takes the darkest real value: the lowest, or in MONOCHROME1 the highest.
    assert np.array_equal(
        fill_padding(turned, padding, "MR", inverted=True),
        TOP - fill_padding(image, padding, "MR"),
    )
    plain = enhance_stack(image[None], "MR", Uneven(), padding=padding[None]).values
    as_twin = enhance_stack(
        turned[None], "MR", Uneven(), padding=padding[None], inverted=True
    ).values
    np.testing.assert_allclose(as_twin, TOP - plain, atol=2e-3)
    as_is = enhance_stack(turned[None], "MR", Uneven(), padding=padding[None]).values
    assert np.abs(as_is - (TOP - plain)).max() > 50  # what the turn is for
    # CT's Hounsfield range is fixed whatever the display polarity.
    assert normalization_for(image, "CT", inverted=True) == normalization_for(image, "CT")


def write_series(folder: Path, turned: list[bool]) -> None:
    """An MR series of `picture()`, shifted per image, each stored as MONOCHROME2 or, where
    `turned`, as MONOCHROME1."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    image = picture()
    series = f"{UID}.{len(folder.name)}.{sum(turned)}"
    folder.mkdir(parents=True)
    for index, monochrome1 in enumerate(turned):
        ds = template.copy()
        for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = UID, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{index + 1}"
        ds.InstanceNumber = index + 1
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
        values = np.roll(image, 5 * index, axis=1)
        ds.PixelData = (TOP - values if monochrome1 else values).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)


def enhanced(folder: Path, turned: list[bool]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The job's details (less timings) and its derived images, in instance order."""
    write_series(folder, turned)
    return enhanced_again(folder)


def enhanced_again(folder: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    """`enhanced` for the series already in `folder`."""
    ((_, inputs),) = series_in(folder).items()
    method = SrcnnMethod(small_batch_runner(4))
    out = folder.with_name(f"{folder.name}-out")
    output = enhance_series(1, inputs, Settings(), lambda modality: [method], file_sink(out))
    images = [dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    pictures = sorted((ds for ds in images if "PixelData" in ds), key=lambda ds: ds.InstanceNumber)
    return without_timings(output), [ds.pixel_array.astype(np.int32) for ds in pictures]


def test_a_monochrome1_series_is_enhanced_and_measured_as_its_monochrome2_twin(
    tmp_path: Path,
) -> None:
    twin_details, twin_images = enhanced(tmp_path / "m2", [False] * 3)
    details, images = enhanced(tmp_path / "m1", [True] * 3)
    assert len(images) == len(twin_images) == 3
    for image, twin in zip(images, twin_images, strict=True):
        assert np.abs(image - (TOP - twin)).max() <= 1  # rounding to a stored step
    # PSNR, the self-check's gain and QA (its body is the bright part as displayed) do not
    # depend on the stored polarity. SSIM does (its luminance term compares mean values, as
    # stored): it is not compared here.
    (method,), (twin_method,) = details["methods"], twin_details["methods"]
    assert twin_method["self_check_images"] == 3
    for key in ("psnr_mean_db", "self_check_gain_mean_db"):
        assert method[key] == pytest.approx(twin_method[key], abs=0.01), key
    assert [i["qa"] for i in method["per_image"]] == [i["qa"] for i in twin_method["per_image"]]
    assert [len(i["qa_reasons"]) for i in method["per_image"]] == [
        len(i["qa_reasons"]) for i in twin_method["per_image"]
    ]  # the same reasons (their numbers round apart in the last digit)


def test_each_image_of_a_series_of_both_polarities_is_turned_as_it_is_stored(
    tmp_path: Path,
) -> None:
    _, twin_images = enhanced(tmp_path / "m2", [False] * 3)
    _, images = enhanced(tmp_path / "mixed", [True, False, False])
    assert np.abs(images[0] - (TOP - twin_images[0])).max() <= 1
    for image, twin in zip(images[1:], twin_images[1:], strict=True):
        assert np.abs(image - twin).max() <= 1


def test_a_ct_series_is_never_turned_whatever_its_display_polarity(tmp_path: Path) -> None:
    """HU mean the same however a CT image is displayed: its working range is fixed and QA's
    body is its high HU, MONOCHROME1 or not."""
    results = []
    for name, photometric in (("plain", "MONOCHROME2"), ("shown-inverted", "MONOCHROME1")):
        folder = tmp_path / name
        write_series(folder, [False] * 3)
        for path in folder.iterdir():
            ds = dcmread(path)
            ds.Modality, ds.PhotometricInterpretation = "CT", photometric
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.save_as(path, enforce_file_format=True)
        results.append(enhanced_again(folder))
    (plain, plain_images), (inverted, inverted_images) = results
    for image, twin in zip(inverted_images, plain_images, strict=True):
        assert np.array_equal(image, twin)
    (method,), (twin_method,) = inverted["methods"], plain["methods"]
    assert [i["qa_reasons"] for i in method["per_image"]] == [
        i["qa_reasons"] for i in twin_method["per_image"]
    ]
