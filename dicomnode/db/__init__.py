"""The database layer: the only code that talks SQL."""

from dicomnode.db.engine import Database, open_database
from dicomnode.db.records import DeliveryRecord, JobRecord, ReceivedInstance, SpooledInstance
from dicomnode.status import DeliveryStatus, JobStatus

__all__ = [
    "Database",
    "DeliveryRecord",
    "DeliveryStatus",
    "JobRecord",
    "JobStatus",
    "ReceivedInstance",
    "SpooledInstance",
    "open_database",
]
