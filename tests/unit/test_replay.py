"""What a release or a resend sends again, as a table (pipeline.replay.replay_selection)."""

import pytest

from dicomnode.pipeline.replay import ReplaySelection, replay_selection
from dicomnode.status import JobPart, Replay

OUTPUTS = {"series": ["d1", "r1", "d2", "r2"], "held": ["d2", "r2"], "unenhanced": ["s9"]}
OUTBOX = ["d1", "d2", "r1", "r2"]

TABLE = [
    # an originals job sends its instances, all of them, whatever the mode
    (JobPart.ORIGINALS, Replay.SENT, None, ReplaySelection(None, ())),
    # a release sends the held series only: no input, nothing already sent
    (JobPart.DERIVED, Replay.HELD, OUTPUTS, ReplaySelection(frozenset(), ("d2", "r2"))),
    # a resend of a done derived job: every series it made, and the inputs it sent as they came
    (
        JobPart.DERIVED,
        Replay.SENT,
        OUTPUTS,
        ReplaySelection(frozenset({"s9"}), ("d1", "r1", "d2", "r2")),
    ),
    # a job from before the record: its whole outbox
    (JobPart.DERIVED, Replay.SENT, None, ReplaySelection(frozenset(), tuple(OUTBOX))),
    (JobPart.DERIVED, Replay.HELD, None, ReplaySelection(frozenset(), tuple(OUTBOX))),
]


@pytest.mark.parametrize(("part", "mode", "outputs", "expected"), TABLE)
def test_what_a_replay_sends(
    part: JobPart, mode: Replay, outputs: dict[str, list[str]] | None, expected: ReplaySelection
) -> None:
    assert replay_selection(part, mode, outputs, OUTBOX) == expected
