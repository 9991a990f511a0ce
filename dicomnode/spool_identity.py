"""Which spool a database belongs to, so that a node never runs on a mismatched pair.

A data disk that did not mount leaves `data_dir` an empty folder on the system disk; a database
deleted, emptied or restored leaves a spool whose files it does not know. Started on such a
pair, the node went on as if nothing were wrong: it took the acknowledged instances whose files
it could not see for a power loss's and forgot them, or let the spool's undelivered series lie
unknown, and received new ones where the disk, once back, would hide them.

So the spool and the database carry one identity, a UUID: a file in the spool's root
(`Spool.identity`) and a row in the database (`db/identity.py`). `serve` and `worker` start only
when the two agree, or when one of them is new and the other holds nothing it would lose; they
refuse (ConfigError, exit 2) with what to check. `dicomnode doctor --repair` makes them agree
after an admin has decided what the pair is. The spool file is written before the database row
(`claim_both`), so a process that finds the row always finds the file.

A database restored from an older copy carries the right identity but lacks what arrived after
the copy: the spool's acknowledged instances since then would never have been sent. So each
round of the completion tick that makes jobs counts one more generation, in the database first
and then in the spool (`advance_generation`); a database whose count is below the spool's is
older than it, and the pair is refused until `doctor --repair` has indexed what it lacks. (A
copy taken between a series' arrival and its round is refused too: the repair then finds
nothing to index.)
"""

import uuid

from dicomnode.db import Database
from dicomnode.db.identity import (
    claim_identity,
    holds_instances,
    holds_nothing,
    next_generation,
    raise_generation,
    recorded_generation,
    recorded_identity,
    replace_identity,
)
from dicomnode.errors import ConfigError
from dicomnode.spool import Spool

_DOCTOR = "`dicomnode doctor --repair`"


def mismatched(db: Database, spool: Spool) -> bool:
    """Both have an identity, and not the same one."""
    in_db, in_spool = recorded_identity(db), spool.identity()
    return in_db is not None and in_spool is not None and in_db != in_spool


def identity_problem(db: Database, spool: Spool) -> str | None:
    """Why this database and this spool must not be run together (None: they may)."""
    in_db, in_spool = recorded_identity(db), spool.identity()
    if in_db is not None and in_spool is not None:
        if in_db == in_spool:
            return _older_database(db, spool)
        return (
            f"the spool {spool.root} is spool {in_spool}, but the database belongs to spool "
            f"{in_db}: another node's data folder or database (node.data_dir, "
            f"node.database_url)? If this pair is right after all, "
            "`dicomnode doctor --repair --adopt-spool` makes it one"
        )
    if in_db is not None:  # and the spool has no identity
        return (
            f"the spool {spool.root} has no identity file ({spool.identity_path.name}), but the "
            f"database belongs to spool {in_db}: is the data disk mounted (node.data_dir)? If "
            f"the spool was lost for good, {_DOCTOR} lists what is missing and gives this "
            "folder the database's identity"
        )
    if in_spool is not None and spool.generation() and holds_instances(db):
        # A database with data but no identity, beside a spool that counted rounds: a copy
        # from before the pair had its identity.
        return _older_database(db, spool)
    spool_has_files = _holds_files(spool)
    # A spool with an identity beside a database without one that holds nothing: the database
    # was made anew. (Without an identity on either side the pair predates identities: an
    # upgraded node whose every series was purged holds nothing, and a stray file.)
    if in_spool is not None and spool_has_files and holds_nothing(db):
        return (
            f"the database holds no instance and no job, but the spool {spool.root} holds a "
            "node's data: was the database lost or replaced, or does node.database_url point "
            f"to another one? {_DOCTOR} indexes the spool's files into this database (series "
            "not yet delivered are then sent; delivered ones are sent again)"
        )
    if in_spool is None and not spool_has_files and holds_instances(db):
        return (
            f"the database holds received instances, but the spool {spool.root} holds no file "
            f"at all: is the data disk mounted (node.data_dir)? If the spool was lost for good, "
            f"{_DOCTOR} lists what is missing"
        )
    return None


def _older_database(db: Database, spool: Spool) -> str | None:
    ahead, behind = spool.generation(), recorded_generation(db)
    if ahead <= behind:
        return None
    return (
        f"the database is older than the spool {spool.root} (generation {behind}; the spool "
        f"saw {ahead}): was it restored from a copy? What arrived after the copy was made is "
        "in the spool but not in the database, and would never be sent: `dicomnode doctor "
        "--repair --min-age 0` indexes it (its series are then sent), then start again"
    )


def advance_generation(db: Database, spool: Spool) -> None:
    """A round of the completion tick made jobs: one generation more, in the database, then
    in the spool (a crash between the two leaves the spool behind, which is no refusal)."""
    generation = next_generation(db)
    if generation > spool.generation():
        spool.record_generation(generation)


def claim_both(db: Database, spool: Spool) -> str:
    """The pair's identity, recorded on the side that lacks it: a new one for a new pair, else
    the side's that has one. Raises ConfigError for a pair `identity_problem` refuses."""
    problem = identity_problem(db, spool)
    if problem is not None:
        raise ConfigError(f"setting node.data_dir: {problem}")
    identity = spool.claim_identity(recorded_identity(db) or str(uuid.uuid4()))
    recorded = claim_identity(db, identity, generation=spool.generation())
    if recorded != identity:  # another process made a new pair of its own meanwhile
        raise ConfigError(
            f"setting node.data_dir: the spool {spool.root} is spool {identity}, but the "
            f"database now belongs to spool {recorded}: two nodes set up one pair at once?"
        )
    return identity


def make_agree(db: Database, spool: Spool, *, counts: bool = True) -> str:
    """After an admin's repair: the database's identity on both sides, else the spool's, else a
    new one; and, where `counts` (the repair indexed every file it found), the larger
    generation on both."""
    identity = recorded_identity(db) or spool.identity() or str(uuid.uuid4())
    if spool.identity() != identity:
        spool.replace_identity(identity)
    if recorded_identity(db) != identity:
        replace_identity(db, identity)
    if counts:
        generation = raise_generation(db, spool.generation())
        if generation > spool.generation():
            spool.record_generation(generation)
    return identity


def _holds_files(spool: Spool) -> bool:
    """Any received instance or any job output in the spool."""
    return next(spool.instance_file_names(), None) is not None or bool(spool.outbox_job_ids())
