"""What a release or a resend sends again, as a table (pipeline.replay.replay_selection), and
when an earlier version's outbox is whole enough to send again (`made_whole`)."""

from pathlib import Path

import pytest

from dicomnode.pipeline.replay import ReplaySelection, made_whole, replay_selection
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


def test_an_earlier_versions_outbox_is_sent_again_only_when_whole() -> None:
    """Before attempt folders, each attempt rewrote the job's one folder and recorded what it
    made at its end: one cut short left the last record beside part of its files."""
    details = {
        "methods": [
            {"report_sop_uid": "9.3", "per_image": [{"sop": "9.1", "source_sop": "1.1"}]},
            {"report_sop_uid": "9.6", "per_image": [{"sop": "9.4"}, {"sop": "9.5"}]},
        ]
    }
    whole = {
        "8.1": [Path("/o/8.1/9.1.dcm")],
        "8.2": [Path("/o/8.2/9.3.dcm")],
        "8.3": [Path("/o/8.3/9.4.dcm"), Path("/o/8.3/9.5.dcm")],
        "8.4": [Path("/o/8.4/9.6.dcm")],
    }
    assert made_whole(details, whole)
    assert not made_whole(details, {**whole, "8.3": [Path("/o/8.3/9.4.dcm")]})  # an image short
    assert not made_whole(details, {k: v for k, v in whole.items() if k != "8.4"})  # no report
    assert not made_whole(None, whole)  # nothing says what was made: enhanced anew
    assert not made_whole({"methods": []}, whole)
