"""What the node remembers of copies it refused as UID collisions, on a real database."""

from sqlalchemy import func, select

from dicomnode.db import Database
from dicomnode.db.commitments import kept_copies
from dicomnode.db.models import RefusedCopy
from dicomnode.db.refused_copies import remember_refusal
from dicomnode.db.retention import forget_series, lock_series
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive


@ON_BOTH_DATABASES
def test_refusals_are_kept_per_sender_and_forgotten_with_the_kept_copys_series(
    db: Database,
) -> None:
    [kept] = receive(db, "1.2.3.80", 1)
    [other] = receive(db, "1.2.3.81", 1)
    remember_refusal(db, kept, "1.2.3.90", "CT_B")
    remember_refusal(db, kept, "1.2.3.91", "CT_B")  # again: one row, the latest series
    remember_refusal(db, kept, "1.2.3.92", "CT_C")
    remember_refusal(db, other, "1.2.3.93", "CT_B")

    copies = kept_copies(db, [kept, other, "1.2.3.999"])
    assert sorted(copies) == sorted([kept, other])
    assert copies[kept].calling_aet == "MODALITY"
    assert copies[kept].refused_from == {"CT_B", "CT_C"}
    with db.reading() as session:
        latest = session.scalar(
            select(RefusedCopy.series_uid).where(
                RefusedCopy.sop_instance_uid == kept, RefusedCopy.calling_aet == "CT_B"
            )
        )
    assert latest == "1.2.3.91"

    with db.session() as session:
        series = lock_series(session, "1.2.3.80")
        assert series is not None
        forget_series(session, series.series_uid, series.study_uid, lambda _: None)
    with db.reading() as session:
        left = session.scalars(select(RefusedCopy.sop_instance_uid)).all()
        assert session.scalar(select(func.count()).select_from(RefusedCopy)) == 1
    assert left == [other]
    assert kept_copies(db, [other])[other].refused_from == {"CT_B"}
