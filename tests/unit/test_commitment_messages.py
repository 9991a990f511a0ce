"""Storage Commitment messages (PS3.4 J.3) and their settings: built, read back, refused."""

from pathlib import Path

import pytest
from pydicom import Dataset

from dicomnode.config import load_settings
from dicomnode.dicom.commitment import (
    ALL_COMMITTED_EVENT,
    SOME_FAILED_EVENT,
    CommitmentReport,
    CommitmentRequest,
    Failure,
    Reference,
    read_report,
    read_request,
    report_dataset,
    request_dataset,
)
from dicomnode.errors import ConfigError

CT = "1.2.840.10008.5.1.4.1.1.2"
A, B = Reference(CT, "1.2.3.4.1"), Reference(CT, "1.2.3.4.2")


def test_a_request_reads_back_as_built() -> None:
    request = CommitmentRequest("1.2.3.99", (A, B))
    assert read_request(request_dataset(request)) == request


def test_a_report_with_failures_reads_back_with_their_reasons_and_event_type_2() -> None:
    report = CommitmentReport("1.2.3.99", (A,), (Failure(B, 0x0112),))
    dataset = report_dataset(report)
    assert dataset.FailedSOPSequence[0].FailureReason == 0x0112
    assert read_report(dataset) == report
    assert report.event_type == SOME_FAILED_EVENT
    assert CommitmentReport("1.2.3.99", (A,), ()).event_type == ALL_COMMITTED_EVENT


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: delattr(ds, "TransactionUID"), "TransactionUID"),
        (lambda ds: setattr(ds, "TransactionUID", "not.a.uid!"), "TransactionUID"),
        (lambda ds: setattr(ds, "ReferencedSOPSequence", []), "ReferencedSOPSequence"),
        (lambda ds: delattr(ds.ReferencedSOPSequence[0], "ReferencedSOPClassUID"), "SOP class"),
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(change, message: str) -> None:  # type: ignore[no-untyped-def]
    dataset = request_dataset(CommitmentRequest("1.2.3.99", (A,)))
    change(dataset)
    with pytest.raises(ValueError, match=message):
        read_request(dataset)
    with pytest.raises(ValueError, match="no Action Information"):
        read_request(None)


def test_an_empty_report_is_refused() -> None:
    with pytest.raises(ValueError, match="TransactionUID"):
        read_report(Dataset())


def test_peers_and_commitment_settings_load_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "h"\nport = 104\n'
        "storage_commitment = true\ncommitment_timeout_seconds = 5\n"
        '[[peers]]\nae_title = "CT01"\nhost = "10.0.0.21"\nport = 104\n'
    )
    settings = load_settings(path, environ={})
    assert settings.destinations[0].storage_commitment is True
    assert settings.destinations[0].commitment_timeout_seconds == 5
    assert settings.peer("CT01 ") == settings.peers[0] and settings.peer("CT02") is None
    environ = {"DICOMNODE_PEERS": '[{"ae_title": "MR1", "host": "m", "port": 0}]'}
    with pytest.raises(ConfigError, match=r"peers\[0\]\.port"):
        load_settings(path, environ=environ)
    path.write_text(
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "h"\nport = 104\n'
        "commitment_timeout_seconds = 0\n"
    )
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.commitment_timeout_seconds"):
        load_settings(path, environ={})
