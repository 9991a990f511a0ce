"""The one clock of the job tables: the time that stamps and judges leases, retry times and a
series' quiet spell.

Those times are written by one process and compared by another. On PostgreSQL the processes may
run on several hosts, whose clocks drift apart: a receiver whose clock ran 4 minutes ahead of a
worker's took every lease away from the worker renewing it (a live job run twice, then dead),
and completed series that were still arriving. So there the database server's clock is the one
clock, read in the transaction that uses it. SQLite has one host, and its clock is that one.
Retention's cutoffs, days long, go by the host's clock (minutes of drift do not matter there).
"""

from datetime import datetime

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from dicomnode.db.models import utcnow

# Naive UTC, as every stored time (`models.utcnow`); the time of the call, not of the transaction
# start (`now()`), as a host's clock would give it.
_SERVER_NOW = select(func.timezone("UTC", func.clock_timestamp()))


def db_now(connection: Session | Connection) -> datetime:
    """The current time by the database's clock, as naive UTC."""
    dialect = (
        connection.get_bind().dialect if isinstance(connection, Session) else connection.dialect
    )
    if dialect.name != "postgresql":
        return utcnow()
    now: datetime = connection.execute(_SERVER_NOW).scalar_one()
    return now
