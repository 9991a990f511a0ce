"""The hint a refused metrics report gets (pipeline/delivery.py): only a derived job's SR
series is ours to leave out, and only a refusal of its SOP class is helped by leaving it out;
a modality's own SR (a dose report) in the originals is not ours to leave out."""

from pathlib import Path
from types import SimpleNamespace

from pydicom.uid import ComprehensiveSRStorage, CTImageStorage, XRayRadiationDoseSRStorage

from dicomnode.config import Destination
from dicomnode.db import SpooledInstance
from dicomnode.errors import ForwardError
from dicomnode.pipeline.delivery import _refused_report_hint
from dicomnode.status import JobPart

PACS = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)


def series_of(sop_class: str) -> list[SpooledInstance]:
    return [SpooledInstance("1.2.3.4", sop_class, "1.2.840.10008.1.2.1", Path("x.dcm"))]


CLASS_REFUSED = ForwardError(
    "refused 1 of 1 instances: 0x0122", transient=False, class_refused=True
)


def hint(part: JobPart, sop_class: str, refusal: ForwardError = CLASS_REFUSED) -> str:
    job = SimpleNamespace(part=part)
    return _refused_report_hint(job, PACS, series_of(sop_class), refusal)  # type: ignore[arg-type]


def test_a_derived_jobs_refused_report_names_the_setting_and_the_destination() -> None:
    assert hint(JobPart.DERIVED, ComprehensiveSRStorage) == (
        " (the metrics report, an SR document: for a PACS that stores none, "
        "send_metrics_reports = false on the [[destinations]] entry 'pacs' sends the derived "
        "images only)"
    )


def test_an_original_sr_and_refused_images_get_no_such_hint() -> None:
    assert hint(JobPart.ORIGINALS, XRayRadiationDoseSRStorage) == ""
    assert hint(JobPart.ORIGINALS, ComprehensiveSRStorage) == ""
    assert hint(JobPart.DERIVED, CTImageStorage) == ""


def test_a_report_refused_for_its_content_gets_no_such_hint() -> None:
    """0xA900 (data set does not match the SOP class): our report is at fault, not the PACS."""
    content = ForwardError("refused 1 of 1 instances: 0xA900", transient=False)
    assert hint(JobPart.DERIVED, ComprehensiveSRStorage, content) == ""
