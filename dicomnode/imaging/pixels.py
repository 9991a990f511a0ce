"""Value domains: stored pixel values ↔ float32 modality values, without losing anything.

An enhancement works on modality values (Hounsfield units for CT: PS3.3 C.11.1.1.2, stored value *
RescaleSlope + RescaleIntercept) as float32. `to_modality` gets them from a dataset; `to_stored`
re-quantises a (possibly modified) float image into the source's stored dtype, bit depth and
rescale, clipped to what BitsStored can hold, with padding pixels restored exactly. For an
unmodified image the round trip is bit-exact.

Only single-sample grayscale images (MONOCHROME1/2, 8..16 bits stored) are handled; anything else
raises `ImageDeclined` with the reason, so a caller forwards the image unchanged instead of
corrupting it.
"""

import math
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array

from dicomnode.dicom.codestream import check_code_streams
from dicomnode.errors import ImageDeclined, PixelsUndecodable
from dicomnode.imaging.normalize import CT_HU_RANGE
from dicomnode.imaging.unused_bits import (
    check_unused_bits,
    embedded_overlay_bits,
    within_stored_bits,
)

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class PixelDomain:
    """How one image's stored values map to modality values, and what they may be."""

    bits_allocated: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    photometric: str
    padding_value: int | None
    padding_limit: int | None

    @property
    def stored_min(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.signed else 0

    @property
    def stored_max(self) -> int:
        return (1 << (self.bits_stored - 1)) - 1 if self.signed else (1 << self.bits_stored) - 1

    @property
    def dtype(self) -> np.dtype:
        kind = "i" if self.signed else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    @property
    def inverted(self) -> bool:
        """MONOCHROME1: the lowest value displays white (PS3.3 C.7.6.3.1.2)."""
        return self.photometric == "MONOCHROME1"


@dataclass(frozen=True)
class ModalityImage:
    """Float32 modality values shaped (frames, rows, columns), and where the padding is."""

    values: np.ndarray
    padding: np.ndarray  # bool, same shape: True where the source held padding
    domain: PixelDomain
    stored: np.ndarray  # the decoded stored values: restores padding pixels exactly on the way back


# Enhanced multi-frame images keep per-frame descriptions here instead of at the root.
_FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _number(ds: Dataset, keyword: str) -> float | None:
    """One attribute's value as a finite number, None when absent or empty; ImageDeclined
    names the attribute when it holds several values (VM 1 everywhere here) or no number."""
    sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
    try:
        value = ds.get(keyword)
    except (TypeError, ValueError) as exc:  # pydicom converts the value as it is read
        raise ImageDeclined(f"sop={sop}: {keyword} cannot be read: {exc}") from None
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        shown = "\\".join(str(item) for item in value)  # as the file holds them
        raise ImageDeclined(
            f"sop={sop}: {keyword} has {len(value)} values ({shown}); it may have only one"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ImageDeclined(f"sop={sop}: {keyword}={value!r} is not a finite number")
    return number


def _int(ds: Dataset, keyword: str) -> int | None:
    number = _number(ds, keyword)
    return None if number is None else int(number)


def pixel_domain(ds: Dataset) -> PixelDomain:
    """Read and check the pixel description; ImageDeclined says why an image cannot be used."""
    sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageDeclined(f"sop={sop}: float pixel data; only integer images are enhanced")
        raise ImageDeclined(f"sop={sop}: no pixel data (not an image)")
    if any(keyword in ds for keyword in _FUNCTIONAL_GROUPS):
        raise ImageDeclined(
            f"sop={sop}: an enhanced multi-frame image: its rescale, geometry and frame types "
            "are in functional groups (PS3.3 C.7.6.16), which derived images do not rewrite"
        )
    if ds.original_encoding[1] is False:
        # pydicom will not re-encode a big endian data set as little endian (the derived
        # image's syntax); the syntax is retired (PS3.5 A.3) and rarely seen.
        raise ImageDeclined(f"sop={sop}: Explicit VR Big Endian (retired, PS3.5 A.3)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = _int(ds, "SamplesPerPixel") or 1
    if samples != 1 or photometric not in GRAYSCALE:
        raise ImageDeclined(
            f"sop={sop}: PhotometricInterpretation={photometric or '(missing)'} with "
            f"SamplesPerPixel={samples}; only grayscale (MONOCHROME1/2) images are enhanced"
        )
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if allocated not in (8, 16) or stored is None or not 1 <= stored <= allocated:
        raise ImageDeclined(
            f"sop={sop}: BitsAllocated={allocated}, BitsStored={stored}; "
            "only 8- or 16-bit allocations holding BitsStored <= BitsAllocated are enhanced"
        )
    high_bit = _int(ds, "HighBit")
    if high_bit is not None and high_bit != stored - 1:
        # PS3.5 8.1.1: the stored bits end at HighBit = BitsStored - 1; anything else means the
        # header does not describe the pixels, and guessing could shift every value.
        raise ImageDeclined(
            f"sop={sop}: HighBit={high_bit} with BitsStored={stored}; HighBit must be "
            "BitsStored - 1"
        )
    return PixelDomain(
        bits_allocated=allocated,
        bits_stored=stored,
        signed=_int(ds, "PixelRepresentation") == 1,
        slope=_slope(ds),
        intercept=_number(ds, "RescaleIntercept") or 0.0,
        photometric=photometric,
        padding_value=_int(ds, "PixelPaddingValue"),
        padding_limit=_int(ds, "PixelPaddingRangeLimit"),
    )


def _slope(ds: Dataset) -> float:
    slope = _number(ds, "RescaleSlope")
    if slope == 0:  # every stored value would be one modality value (PS3.3 C.11.1.1.2)
        sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
        raise ImageDeclined(f"sop={sop}: RescaleSlope=0 maps every stored value to one")
    return 1.0 if slope is None else slope


def stored_values(ds: Dataset) -> np.ndarray:
    """The decoded pixels as (frames, rows, columns), compressed syntaxes included, with the
    bits above BitsStored as the file holds them (`unused_bits`)."""
    check_code_streams(ds)
    try:
        array = pixel_array(ds, correct_unused_bits=False)
    except Exception as exc:  # decoders raise many types for truncated or undecodable data
        sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
        raise PixelsUndecodable(f"sop={sop}: pixel data cannot be decoded: {exc}") from exc
    frames = _int(ds, "NumberOfFrames") or 1
    return array.reshape(frames, *array.shape[-2:])


def padding_mask(stored: np.ndarray, domain: PixelDomain) -> np.ndarray:
    """Pixels equal to PixelPaddingValue, or inside its range with PixelPaddingRangeLimit."""
    if domain.padding_value is None:
        return np.zeros(stored.shape, dtype=bool)
    # The padding value is encoded like the pixels (PS3.3 C.7.5.1.1.2): reinterpret its bits.
    padding = _as_pixel_value(domain.padding_value, domain)
    if domain.padding_limit is None:
        mask: np.ndarray = stored == padding
        return mask
    limit = _as_pixel_value(domain.padding_limit, domain)
    low, high = min(padding, limit), max(padding, limit)
    return (stored >= low) & (stored <= high)


def _as_pixel_value(value: int, domain: PixelDomain) -> int:
    bits = domain.bits_allocated
    value &= (1 << bits) - 1
    if domain.signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def to_modality(ds: Dataset) -> ModalityImage:
    """Stored values → float32 modality values (rescale applied), with the padding mask.

    A CT's values below air (CT_HU_RANGE[0], -1024 HU) are padding too: scanners write -2000,
    -2048 or -3024 HU outside the reconstruction circle, many without a PixelPaddingValue, and
    left in, that step rings into the real pixels beside it in every filter and network."""
    domain = pixel_domain(ds)
    raw = stored_values(ds)
    stored = within_stored_bits(raw, domain.bits_stored)
    padding = padding_mask(stored, domain)
    if stored is not raw:
        sop = str(ds.get("SOPInstanceUID", "(no SOPInstanceUID)"))
        check_unused_bits(raw, domain.bits_stored, padding, embedded_overlay_bits(ds), sop)
    values = stored.astype(np.float64)
    values *= domain.slope  # in place: the same values, without an image-sized array per step
    values += domain.intercept
    if str(ds.get("Modality", "")).upper() == "CT":
        padding |= values < CT_HU_RANGE[0]
    return ModalityImage(values.astype(np.float32), padding, domain, stored)


def to_stored(
    values: np.ndarray,
    domain: PixelDomain,
    padding: np.ndarray,
    padding_stored: np.ndarray | None = None,
) -> np.ndarray:
    """Float modality values → stored values in the source's dtype, rescale and bit depth.

    Rounds to the nearest stored step, clips to [stored_min, stored_max], and puts back the
    source's padding pixels (`padding_stored` holds their exact stored values; without it, the
    PixelPaddingValue). NaN becomes the lowest storable value rather than garbage.
    """
    exact = values.astype(np.float64)  # each step in place: every derived image passes here
    exact -= domain.intercept
    exact /= domain.slope
    np.rint(exact, out=exact)
    np.nan_to_num(exact, copy=False, nan=domain.stored_min)
    np.clip(exact, domain.stored_min, domain.stored_max, out=exact)
    stored = exact.astype(domain.dtype)
    if padding.any():
        if padding_stored is not None:
            stored[padding] = padding_stored[padding]
        elif domain.padding_value is not None:
            stored[padding] = _as_pixel_value(domain.padding_value, domain)
    return stored
