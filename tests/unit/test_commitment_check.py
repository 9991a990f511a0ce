"""When a Storage Commitment shortfall is worth asking again (forward/commitment.py `_check`)."""

import pytest

from dicomnode.config import Destination, Settings
from dicomnode.db.commitments import TransactionState
from dicomnode.dicom.commitment import CommitmentRequest, Reference
from dicomnode.errors import ForwardError
from dicomnode.forward.commitment import _check

CT = "1.2.840.10008.5.1.4.1.1.2"
PACS = Destination("pacs", "PACS", "127.0.0.1", 104, storage_commitment=True)
REQUEST = CommitmentRequest("2.25.1", tuple(Reference(CT, f"1.2.{n}") for n in range(10)))


def _raised(failed: list[tuple[str, int]]) -> ForwardError:
    state = TransactionState(committed=10 - len(failed), pending=0, failed=tuple(failed))
    with pytest.raises(ForwardError) as raised:
        _check(state, REQUEST, PACS, Settings(destinations=[PACS]))
    return raised.value


def test_failures_that_may_pass_are_asked_again_even_beside_one_for_good() -> None:
    mixed = _raised([("1.2.0", 0x0122), *((f"1.2.{n}", 0x0213) for n in range(1, 10))])
    assert mixed.transient  # the nine out of resources go again; 0x0122 ends it at the last try


def test_only_failures_for_good_end_the_delivery_at_once() -> None:
    for_good = _raised([("1.2.0", 0x0122), ("1.2.1", 0x0119)])
    assert not for_good.transient
    assert "a reason that sending again cannot change" in str(for_good)
