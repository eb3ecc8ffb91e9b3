"""Events: one JSON form for every kind, read back as the same event; anything else refused."""

import json

import pytest

from starcli import events

SAMPLES = [
    events.Stage(events.ENCODING_BLOCKS, 2, 4),
    events.Note("skipped a.bin: binary"),
    events.Question(1, "where is the retry logic?"),
    events.Token("é, ✓"),
    events.AnswerEnd(0),
    events.PassStart(3, 7),
    events.RankError(1, "RuntimeError: boom"),
    events.Result({"answers": [{"answer": "42"}], "total_s": 1.5}),
]


def test_every_kind_has_one_json_form_and_reads_back_the_same():
    assert {type(e) for e in SAMPLES} == set(events.KINDS.values())
    for event in SAMPLES:
        line = json.dumps(events.to_json(event))
        assert json.loads(line)["type"] == event.type
        assert events.from_json(json.loads(line)) == event


@pytest.mark.parametrize("bad", [{}, {"type": "nope"}, {"type": "token"}, [], "token", {"type": "stage", "done": 1}])
def test_what_is_not_an_event_is_refused(bad):
    with pytest.raises(ValueError):
        events.from_json(bad)


def test_unknown_extra_keys_are_ignored():
    assert events.from_json({"type": "note", "text": "x", "rank": 3}) == events.Note("x")
