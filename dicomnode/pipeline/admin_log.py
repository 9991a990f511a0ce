"""The node's log of admin actions: `dicomnode jobs retry|release|cancel|resend|discard` and
`dicomnode purge` run in processes of their own and write what they did to the database
(`db.history`); the node logs each one once, within `worker.poll_seconds`, in its own log where
an operator reads the attempts those actions cause. Actions taken while no node runs are logged
at its next start.
"""

import logging

from dicomnode.db import Database
from dicomnode.db.history import take_unlogged_admin_events

log = logging.getLogger("dicomnode.admin")


def log_admin_actions(db: Database) -> int:
    """Log every admin action not yet logged (one line each); return how many."""
    events = take_unlogged_admin_events(db)
    for event in events:
        log.info(
            "admin action=%s job=%s user=%s at=%sZ: %s",
            event.kind,
            "-" if event.job_id is None else event.job_id,
            event.user or "-",
            event.at.isoformat(timespec="seconds"),
            event.detail or "",
        )
    return len(events)
