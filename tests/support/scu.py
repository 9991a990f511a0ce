"""A plain pynetdicom SCU for tests that need the exact status (and comment) of one C-STORE, and
one C-STORE as the receiver gets it, for tests that call its handlers directly."""

from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, build_context
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from dicomnode.receive.store_lane import Arrival


def c_store(
    port: int, path: Path, calling_aet: str = "RAWSCU", *, as_file_meta_says: bool = False
) -> Dataset | None:
    """Send one file as its bytes; the status dataset, or None if it could not be sent at all.

    `as_file_meta_says`: the request names the SOP class and instance of the file meta, as
    pynetdicom's chunked sending does, not those of the data set."""
    try:
        meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
        sop_class, syntax = str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
    except Exception:
        return None
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.requested_contexts = [build_context(sop_class, syntax)]
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    if not assoc.is_established:
        return None
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = as_file_meta_says
    try:
        status = assoc.send_c_store(path)
        return status if "Status" in status else None
    except Exception:  # pynetdicom refuses to send some files itself (no accepted context)
        return None
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()


def open_association(port: int, calling_aet: str = "HOLDER") -> Association:
    """An idle association (Verification only) that the caller keeps open, then releases."""
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="DICOMNODE")


def arrival_of(dataset: Dataset, assoc: object) -> Arrival:
    """`dataset` as the receiver gets one C-STORE of it on `assoc` (a stand-in association):
    its bytes in Explicit VR Little Endian, as write_ct_series writes them."""
    data = DicomBytesIO()
    data.is_little_endian, data.is_implicit_VR = True, False
    write_dataset(data, dataset)
    return Arrival(
        assoc,  # type: ignore[arg-type]
        dataset.SOPClassUID,
        dataset.SOPInstanceUID,
        dataset.SOPClassUID,
        ExplicitVRLittleEndian,
        data.getvalue(),
    )
