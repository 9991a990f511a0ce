"""Copies of a source's header that conform to the IOD of what we build from them.

Real series arrive de-identified (type-2 attributes such as PatientBirthDate dropped) or with
values that break PS3.5 (an ISO date `1970-01-01` in a DA). A derived image and the metrics SR
copy the Patient, Study, Series and Equipment modules from their source, so that copy is made to
conform first: type-2 attributes of the IOD's mandatory modules present (empty when unknown,
PS3.5 7.4.3), and invalid values of those four modules replaced rather than carried on, except
the values the PACS files the patient and the study by (`IDENTITY`): a derived series filed under a
blanked Patient ID would sit apart from its source (Orthanc keys a study by Patient ID and Study
Instance UID), so those are copied exactly as the source has them, errors and all. The
source dataset is never modified. Which attribute has which type comes from highdicom's tables of
the standard; whether a value is valid, from pydicom's VR validators.
"""

import copy
import logging
from functools import lru_cache

from highdicom._standard_utils import (  # highdicom's tables of PS3.3 (IODs, modules, types)
    get_iod_module_map,
    get_module_attribute_map,
    get_sop_class_iod_map,
)
from pydicom import Dataset, config
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import (
    STR_VR,
    TEXT_VR_DELIMS,
    PersonName,
    format_number_as_ds,
    validate_value,
)

from dicomnode.errors import ImageDeclined
from dicomnode.warning_subject import user_warnings_ignored

log = logging.getLogger(__name__)

# Information entities whose attributes a derived object copies from its source unchanged
# (PS3.3 A.1.2): their values must be valid for the new object to be.
COPIED_ENTITIES = frozenset({"Patient", "Study", "Series", "Equipment"})
# Enumerated values (pydicom checks a CS's characters, not its terms).
ENUMERATED = {
    "PatientSex": frozenset({"M", "F", "O"}),  # PS3.3 C.7.1.1
    "PatientIdentityRemoved": frozenset({"YES", "NO"}),  # PS3.3 C.7.1.1
    "PatientSexNeutered": frozenset({"ALTERED", "UNALTERED"}),  # PS3.3 C.7.2.2
}
# What a PACS matches a new series to its patient and study by, and shows beside it: copied as
# they are, even when invalid (the source's own copy at the PACS has the same value).
IDENTITY = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
    }
)
# What an empty DeidentificationMethod of a source whose identity was removed becomes.
UNKNOWN_DEIDENTIFICATION = "unknown: the source does not name it"
# Strictest first: an attribute in several modules of one IOD keeps its strictest type.
_TYPE_ORDER = ("1", "1C", "2", "2C", "3")


@lru_cache(maxsize=64)
def _attribute_types(sop_class_uid: str) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """(keyword → type in the copied entities' modules, type-2 keywords of mandatory modules),
    or None when the SOP class's IOD is not in the standard."""
    iod = get_sop_class_iod_map().get(sop_class_uid)
    if iod is None:
        return None
    modules = get_module_attribute_map()
    types: dict[str, str] = {}
    required_empty: list[str] = []
    for module in get_iod_module_map()[iod]:
        for attribute in modules[module["key"]]:
            if attribute["path"]:  # nested in a sequence: the sequence's own rules apply
                continue
            keyword, kind = str(attribute["keyword"]), str(attribute["type"])
            kind = kind if kind in _TYPE_ORDER else "3"
            if module["ie"] in COPIED_ENTITIES:
                known = types.get(keyword, "3")
                types[keyword] = min(known, kind, key=_TYPE_ORDER.index)
            # PS3.3 A.1.3: a mandatory module's type-2 attributes are always present.
            if module["usage"] == "M" and kind == "2" and keyword not in required_empty:
                required_empty.append(keyword)
    return types, tuple(required_empty)


def _types_for(ds: Dataset, sop: str) -> tuple[dict[str, str], tuple[str, ...]]:
    sop_class = str(ds.get("SOPClassUID", ""))
    found = _attribute_types(sop_class)
    if found is None:
        raise ImageDeclined(
            f"sop={sop}: SOPClassUID {sop_class or '(missing)'} is not a standard storage "
            "class; its IOD (PS3.3 Annex A), and so what it requires, is unknown"
        )
    return found


def required_empty_keywords(sop_class_uid: str) -> tuple[str, ...]:
    """The type-2 attributes an instance of this SOP class must carry, empty if unknown."""
    found = _attribute_types(str(sop_class_uid))
    return found[1] if found else ()


def is_valid(ds: Dataset, keyword: str) -> bool:
    """Whether the present attribute's value conforms to its VR (PS3.5 6.2) and enumeration.

    pydicom's own validators decide; their messages quote the value, so only the verdict is used.
    """
    try:
        # pydicom warns quoting the value when it converts an invalid one (PHI); its "pydicom"
        # logger logs the same line, which the node's logging set-up must mute.
        with user_warnings_ignored():
            element = ds[keyword]
    except ValueError:  # reading_validation_mode RAISE: the conversion itself refused it
        return False
    if element.VR == "SQ" or element.VM == 0:
        return True
    values = element.value if element.VM > 1 else [element.value]
    for value in values:
        # The validators read text: IS, DS, PN, ... values are checked in their string form.
        text = str(value) if element.VR in STR_VR else value
        try:
            validate_value(element.VR, text, config.RAISE)
        except ValueError:
            return False
        if keyword in ENUMERATED and str(value) not in ENUMERATED[keyword]:
            return False
    return True


def _empty_sequence(ds: Dataset, keyword: str) -> bool:
    element = ds[keyword]
    return element.VR == "SQ" and not element.value


def _mend_deidentification(ds: Dataset) -> bool:
    """Give an empty DeidentificationMethod the only value that is true; whether it did.

    A de-identified source often says PatientIdentityRemoved YES with the method empty, which
    PS3.3 C.7.1.1 does not allow (type 1C: required then, the method or its code sequence):
    every derived image and the SR carried the error on. Removed, it would be missing instead;
    what the method was, nothing here knows, so that is what it says. Where the identity was
    not removed, an empty one is removed (it must then be absent)."""
    if "DeidentificationMethod" not in ds or ds["DeidentificationMethod"].VM:
        return False
    coded = ds.get("DeidentificationMethodCodeSequence")
    if str(ds.get("PatientIdentityRemoved", "")).strip() != "YES" or coded:
        del ds.DeidentificationMethod
    else:
        ds.DeidentificationMethod = UNKNOWN_DEIDENTIFICATION
    return True


def _set_empty(ds: Dataset, keyword: str) -> None:
    vr = dictionary_VR(keyword)
    ds.add_new(keyword, vr, [] if vr == "SQ" else None)


def conform(ds: Dataset, *, keep_identity: bool = True) -> tuple[str, ...]:
    """Make `ds`, a copy the caller owns, conform; return the keywords changed (no values).

    An invalid value of the Patient/Study/Series/Equipment modules becomes empty where the
    attribute is type 2/2C (PS3.5 7.4.3: present, zero length when unknown) and is removed where
    it is type 3 or 1C (the standard never requires a wrong value); an empty
    DeidentificationMethod is mended (`_mend_deidentification`). Type-1 values are kept: they
    are the identity (StudyInstanceUID, Modality, ...) shared with the source, and a source that
    carries a wrong one already breaks the same rule; so are the `IDENTITY` values, unless
    `keep_identity` is false (a header for a library that refuses them). Absent type-2
    attributes of the IOD's mandatory modules are written empty.
    """
    sop = str(ds.get("SOPInstanceUID", "(no SOPInstanceUID)"))
    types, required_empty = _types_for(ds, sop)
    kept = IDENTITY if keep_identity else frozenset()
    changed = []
    for keyword, kind in types.items():
        if keyword not in ds or kind == "1" or keyword in kept:
            continue
        # An empty sequence says "unknown" only where the attribute is type 2: a type-3 one
        # that is present must hold its item(s) (dciodvfy: "Bad Sequence number of Items 0").
        empty_optional = kind not in ("2", "2C") and _empty_sequence(ds, keyword)
        if is_valid(ds, keyword) and not empty_optional:
            continue
        if kind in ("2", "2C"):
            _set_empty(ds, keyword)
        else:
            del ds[keyword]
        changed.append(keyword)
    for keyword in required_empty:
        if keyword not in ds:
            _set_empty(ds, keyword)
            changed.append(keyword)
    if _mend_deidentification(ds):
        changed.append("DeidentificationMethod")
    if changed:
        log.debug("conformed sop=%s attributes=%s", sop, ",".join(changed))
    return tuple(changed)


def shorten_decimal_strings(ds: Dataset) -> list[str]:
    """Rewrite each DS value of more than 16 characters (PS3.5 6.2), at any depth, as the
    nearest one that fits; return the keywords changed. A scanner that writes
    ImagePositionPatient as "-96.5729749755102" made every derived image fail dciodvfy; the
    value moves by under 1e-12 of itself."""
    changed = []
    for tag in list(ds.keys()):  # keys: converting every element would convert invalid ones
        raw = ds.get_item(tag)
        vr = raw.VR or _dictionary_vr_of(tag)
        if vr == "SQ":
            for item in ds[tag].value or ():
                changed += shorten_decimal_strings(item)
            continue
        if vr != "DS" or not _too_long(raw):
            continue
        element = ds[tag]
        values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
        try:
            shortened = [_shortened(value) for value in values]
        except (TypeError, ValueError, OverflowError):  # no number: not a length to mend
            continue
        element.value = shortened if len(shortened) > 1 else shortened[0]
        changed.append(element.keyword or str(tag))
    return changed


def _shortened(value: object) -> object:
    """One DS value in at most 16 characters; an empty one stays empty."""
    if value is None or not str(value).strip():
        return value
    return format_number_as_ds(float(str(value)))


def _dictionary_vr_of(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # a private or unknown tag: not ours to judge
        return None


def _too_long(element: DataElement | RawDataElement) -> bool:
    """Whether one of a DS element's values, as read, is longer than 16 characters."""
    value = element.value
    if isinstance(value, bytes):
        parts = value.strip(b" \0").split(b"\\")
        return any(len(part.strip()) > 16 for part in parts)
    values = value if isinstance(value, MultiValue | list) else [value]
    return any(len(str(getattr(v, "original_string", v)).strip()) > 16 for v in values)


def conformant_header(source: Dataset) -> Dataset:
    """A conformant copy of `source` without its pixel data, identity values included (highdicom
    refuses an invalid Patient's Sex or Study Date): evidence for an SR, which then takes the
    source's identity back (`copy_identity`)."""
    header = copy.deepcopy(source)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in header:
            del header[keyword]
    conform(header, keep_identity=False)
    return header


# The identity VRs whose bytes depend on the character set (the others are ASCII).
_ENCODED_VRS = frozenset({"PN", "LO", "SH"})


def _bytes_as_stored(element: DataElement | RawDataElement) -> bytes | None:
    """An identity value's bytes as they were read (or copied by `copy_identity`), when
    they are still at hand; None once pydicom has decoded them."""
    if isinstance(element, RawDataElement):
        return element.value
    value = element.value
    if isinstance(value, bytes):
        return value
    if isinstance(value, PersonName) and isinstance(value.original_string, bytes):
        return value.original_string
    return None


def copy_identity(target: Dataset, source: Dataset) -> None:
    """`source`'s `IDENTITY` attributes onto `target` as they are, valid or not: byte for byte
    when both are in one character set (a PACS files the patient by these bytes, and bytes
    invalid in their character set, a Latin-1 name labelled UTF-8, do not survive a decode),
    else decoded, so that `target` writes them in its own character set."""
    charset = source.get("SpecificCharacterSet")
    same_character_set = target.get("SpecificCharacterSet") == charset
    for keyword in IDENTITY:
        if keyword not in source:
            continue
        tag, vr = tag_for_keyword(keyword), dictionary_VR(keyword)
        stored = _bytes_as_stored(source.get_item(keyword))
        if same_character_set and vr in _ENCODED_VRS and stored is not None:
            encodings = _encodings(charset)
            if not _round_trips(stored, vr, encodings):  # else decoded, below, loses nothing
                with user_warnings_ignored():  # bytes that do not decode: kept, not decoded
                    value = PersonName(stored, encodings=encodings) if vr == "PN" else stored
                    target[tag] = DataElement(tag, vr, value)  # written as these bytes
                continue
        try:
            with user_warnings_ignored():  # pydicom's warning about a bad value quotes it
                element = copy.deepcopy(source[keyword])
        except ValueError:  # reading_validation_mode RAISE: target keeps its conformed value
            continue
        target[keyword] = element


def _round_trips(stored: bytes, vr: str, encodings: list[str]) -> bool:
    """Whether `stored`, decoded in `encodings` and encoded again, gives its bytes back."""
    with user_warnings_ignored():  # pydicom's warning about undecodable bytes quotes them
        if vr == "PN":
            text = str(PersonName(stored, encodings=encodings).decode())
            again = PersonName(text).encode(encodings)  # a new name: no cached bytes
        else:
            again = encode_string(decode_bytes(stored, encodings, TEXT_VR_DELIMS), encodings)
    return again.rstrip(b" \x00") == stored.rstrip(b" \x00")


def _encodings(charset: object) -> list[str]:
    """Python codecs of a Specific Character Set value (pydicom's default without one)."""
    terms = charset if isinstance(charset, list | MultiValue) else [charset or ""]
    return convert_encodings([str(term) for term in terms])
