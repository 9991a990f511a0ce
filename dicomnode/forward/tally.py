"""What one attempt to send a series got from the peer, and the one error that tells it all.

A series goes on past an instance the peer does not take, so that one instance (a quota, a
plugin that rejects it, a file of ours that went bad) does not keep the rest from the PACS on
every retry, as a plain router would not either. It stops only when the peer itself is failing:
past `MAX_BROKEN_OFF` aborted associations, or `MAX_TRANSIENT_IN_A_ROW` "try later" answers one
after the other (a PACS out of disk answers every instance so).
"""

from dataclasses import dataclass, field

from dicomnode.errors import ForwardError, SeriesIncomplete, UnreadableSpool

# Instances of one series per attempt on which a peer may end the association before the
# delivery stops: past that the peer is failing, not one instance.
MAX_BROKEN_OFF = 3
# Transient statuses (0xA7xx, 0x0110, 0x0213) in a row that stop the attempt: one may be about
# the instance, two in a row are about the peer.
MAX_TRANSIENT_IN_A_ROW = 2


def listed(problems: list[str]) -> str:
    """The first three problems, and how many more: an error message stays one readable line."""
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


@dataclass
class SeriesTally:
    """The instances of one attempt, by what became of them; `defer` and `break_off` say when
    to give up.

    Its messages do not name the destination: each reader already does (the job's error
    `name: ...`, the log line's `destination=name`)."""

    total: int  # instances in the series to send on this attempt
    earlier: int = 0  # ... and those the peer stored on an earlier one (not sent again)
    tried: int = 0
    delivered: list[str] = field(default_factory=list)  # SOP Instance UIDs the peer stored
    remarks: list[str] = field(default_factory=list)  # stored with a warning status
    refused: list[str] = field(default_factory=list)  # for good: resending fails the same way
    deferred: list[str] = field(default_factory=list)  # "try later" statuses
    broken_off: list[str] = field(default_factory=list)  # the peer ended the association
    unreadable: list[str] = field(default_factory=list)  # our spooled file could not be read
    unsendable: list[str] = field(default_factory=list)  # in no syntax the peer takes (video)
    classes_refused: int = 0  # of `refused`: the SOP class itself (0x0122, no context for it)
    _transient_in_a_row: int = 0

    @property
    def sent(self) -> int:
        return len(self.delivered)

    @property
    def warnings(self) -> int:
        return len(self.remarks)

    def stored(self, sop_uid: str, remark: str | None = None) -> None:
        """The peer stored `sop_uid`; `remark`: the warning status it answered."""
        self.delivered.append(sop_uid)
        self.remarks += [remark] if remark else []
        self._transient_in_a_row = 0

    def refuse(self, problem: str, *, class_refused: bool = False) -> None:
        """A refusal for good; `class_refused`: of the SOP class itself, not of this data."""
        self.refused.append(problem)
        self.classes_refused += class_refused

    def unread(self, problem: str) -> None:
        self.unreadable.append(problem)

    def cannot_send(self, problem: str) -> None:
        """An instance we cannot put in any syntax the peer took (for good, as a refusal)."""
        self.unsendable.append(problem)

    def defer(self, problem: str) -> bool:
        """Record a transient status; True when the attempt should stop here."""
        self.deferred.append(problem)
        self._transient_in_a_row += 1
        return self._transient_in_a_row >= MAX_TRANSIENT_IN_A_ROW

    def break_off(self, problem: str) -> bool:
        """Record an association the peer ended; True when the attempt should stop here."""
        self.broken_off.append(problem)
        return len(self.broken_off) > MAX_BROKEN_OFF

    def outcomes(self) -> dict[str, int]:
        """How many instances ended each way (the `outcome` label of INSTANCES_FORWARDED)."""
        return {
            "stored": self.sent - self.warnings,
            "warning": self.warnings,
            "refused": len(self.refused),
            "deferred": len(self.deferred),
            "broken_off": len(self.broken_off),
            "unreadable": len(self.unreadable),
            "unsendable": len(self.unsendable),
        }

    def error(self) -> ForwardError | None:
        """The attempt's failure, None when every instance was stored: transient when any
        instance may go later (retried), else permanent for what the peer refused."""
        also = "".join(f"; {part}" for part in self._for_good())
        stopped = f", stopped there: {self.total - self.tried} not tried"
        stopped = stopped if self.tried < self.total else ""
        total, sent = self.total + self.earlier, self.sent + self.earlier  # the whole series
        unreadable = (
            f"{len(self.unreadable)} of {total} spooled files could not be read "
            f"({sent} of {total} sent): {listed(self.unreadable)}"
        )
        later = []
        if self.broken_off:  # the PACS may take them later (it may have been restarting)
            later.append(
                f"broke off the association on {len(self.broken_off)} of "
                f"{total} instances ({sent} sent{stopped}): {listed(self.broken_off)}"
            )
            stopped = ""
        if self.deferred:
            later.append(
                f"answered {listed(self.deferred)} ({len(self.deferred)} of "
                f"{total} instances not taken for now, {sent} sent{stopped})"
            )
        if later:
            later += [unreadable] if self.unreadable else []
            if self.tried < self.total:  # stopped early: the peer is failing, not an instance
                return ForwardError("; ".join(later) + also, transient=True, stored=self.delivered)
            return SeriesIncomplete("; ".join(later) + also, stored=self.delivered)
        if self.unreadable:  # retried too: the files may be back by then
            return UnreadableSpool(unreadable + also, stored=self.delivered)
        if self.refused or self.unsendable:
            return ForwardError(
                "; ".join(self._for_good()),
                transient=False,
                stored=self.delivered,
                class_refused=not self.unsendable and self.classes_refused == len(self.refused),
            )
        return None

    def _for_good(self) -> list[str]:
        """What resending will not change: the peer's refusals, and what we cannot send it."""
        parts = []
        total = self.total + self.earlier
        if self.refused:
            parts.append(
                f"refused {len(self.refused)} of {total} instances: {listed(self.refused)}"
            )
        if self.unsendable:
            parts.append(
                f"{len(self.unsendable)} of {total} instances cannot be sent in a "
                f"transfer syntax it takes: {listed(self.unsendable)}"
            )
        return parts

    def ending(self, error: ForwardError) -> ForwardError:
        """`error`, which ended the attempt midway (a timeout, a peer that no longer
        associates), with what the attempt met before it and what went."""
        before = self.error()
        if before is None:
            error.stored = tuple(self.delivered)
            return error
        return ForwardError(
            f"{error}; before that: {before}", transient=error.transient, stored=self.delivered
        )
