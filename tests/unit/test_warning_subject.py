"""A library's warning about an input names the instance being read when it was issued."""

import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from dicomnode.cli.safe_text import OneLinePerRecord
from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.pipeline.enhancement import load_series
from dicomnode.pipeline.sources import load_sources
from dicomnode.warning_subject import about, user_warnings_ignored, warning_subject


@pytest.fixture
def warnings_log() -> Iterator[io.StringIO]:
    """Warnings logged as the node logs them (`cli.logs`), every one of them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(OneLinePerRecord())
    logger = logging.getLogger("py.warnings")
    logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            yield out
    finally:
        logging.captureWarnings(False)
        logger.removeHandler(handler)


def test_a_warning_names_what_was_being_read_and_only_in_its_own_thread(
    warnings_log: io.StringIO,
) -> None:
    seen_elsewhere: list[str] = []
    with about("job=7"), about("sop=1.2.3"):
        warnings.warn("a value 'Doe^John' is invalid", UserWarning, stacklevel=1)
        worker = threading.Thread(target=lambda: seen_elsewhere.append(warning_subject()))
        worker.start()
        worker.join()
    warnings.warn("outside", UserWarning, stacklevel=1)
    lines = warnings_log.getvalue().splitlines()
    assert lines[0].endswith("UserWarning: a value (value) is invalid (job=7 sop=1.2.3)")
    assert lines[1].endswith("UserWarning: outside")
    assert seen_elsewhere == [""] and warning_subject() == ""


def test_a_warning_said_again_is_dropped_unless_its_subject_differs(
    warnings_log: io.StringIO,
) -> None:
    """Each `catch_warnings` block that changes the filters makes Python forget what it said:
    one bad header gave 52 lines for a 24-slice series. The log says each once."""
    for _ in range(52):
        with about("job=3"):
            warnings.warn("failed to decode 'Doe'", UserWarning, stacklevel=1)
    with about("job=4"):
        warnings.warn("failed to decode 'Doe'", UserWarning, stacklevel=1)
    lines = warnings_log.getvalue().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == [
        "failed to decode (value) (job=3)",
        "failed to decode (value) (job=4)",
    ]


def test_pydicom_s_warning_about_excess_pixel_padding_names_the_instance(
    warnings_log: io.StringIO,
) -> None:
    """The acceptance run's example: 'The pixel data is 8320 bytes long, which indicates it
    contains 128 bytes of excess padding to be removed', with no instance named."""
    path = Path(get_testdata_file("MR_small_padded.dcm"))
    header = dcmread(path, stop_before_pixels=True)
    item = SpooledInstance(
        header.SOPInstanceUID, header.SOPClassUID, header.file_meta.TransferSyntaxUID, path
    )
    images, declined = load_sources([item])
    assert len(images) == 1 and declined == ()
    [line] = [line for line in warnings_log.getvalue().splitlines() if "excess padding" in line]
    assert line.endswith(f"(sop={header.SOPInstanceUID})"), line


def test_a_series_header_s_warning_names_its_instance_under_python_s_default_filter(
    tmp_path: Path,
) -> None:
    """The header is read first (`series_header`), then the images: Python says a warning once
    per place in pydicom's code, so only the first read's line is ever logged. It must be the
    one that names the instance (a review found it was not)."""
    source = dcmread(get_testdata_file("CT_small.dcm"))
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True  # the meta says explicit VR
    write_dataset(body, source)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, source.file_meta)
    path = tmp_path / "mismatch.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    item = SpooledInstance(
        source.SOPInstanceUID, source.SOPClassUID, source.file_meta.TransferSyntaxUID, path
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(OneLinePerRecord())
    logging.getLogger("py.warnings").addHandler(handler)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()  # Python's default: each place says a warning once
            warnings.simplefilter("default")
            load_series([item], Settings())
    finally:
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").removeHandler(handler)
    lines = [line for line in out.getvalue().splitlines() if "implicit VR" in line]
    assert lines and all(line.endswith(f"(sop={source.SOPInstanceUID})") for line in lines)


def test_blocks_that_ignore_warnings_in_several_threads_leave_the_filters_as_they_were() -> None:
    """`catch_warnings` swaps the process-wide filter list: two jobs' blocks that overlapped
    could leave "ignore" installed for good, and every later library warning unsaid."""
    before = list(warnings.filters)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside the blocks too

    def ignore_often() -> None:
        for _ in range(300):
            with user_warnings_ignored():
                pass

    try:
        threads = [threading.Thread(target=ignore_often) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == before
