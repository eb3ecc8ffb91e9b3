"""What a run tells the outside world while it works: progress, notes, the answer's text, the result.

Every layer emits these and only these; one serialization (``to_json`` / ``from_json``) carries them
to the terminal renderer, ``--json``, a rank's pipe to the command's process, and a server's stream.
Nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Union

# stage names several layers report under
LOADING_MODEL = "loading model"
ENCODING_BLOCKS = "encoding blocks"
READING_INPUT = "reading input"
TOKENIZING = "tokenizing"


@dataclass(frozen=True)
class Stage:
    """A counted step: ``done`` of ``total`` (bytes, blocks, steps); ``total`` 0 when unknown."""

    stage: str
    done: int
    total: int = 1
    type: ClassVar[str] = "stage"


@dataclass(frozen=True)
class Note:
    """One line for the user on stderr; a ``warning`` (the input was cut, a cache failed) is shown
    even with --quiet."""

    text: str
    warning: bool = False
    type: ClassVar[str] = "note"


@dataclass(frozen=True)
class Question:
    """The next answer is to this question (several questions in one run)."""

    index: int
    text: str
    type: ClassVar[str] = "question"


@dataclass(frozen=True)
class Token:
    """A piece of the answer's text, whole UTF-8 characters."""

    text: str
    type: ClassVar[str] = "token"


@dataclass(frozen=True)
class AnswerEnd:
    index: int
    type: ClassVar[str] = "answer_end"


@dataclass(frozen=True)
class PassStart:
    """The passes of an input longer than the window: pass ``index`` of ``total`` begins."""

    index: int
    total: int
    type: ClassVar[str] = "pass"


@dataclass(frozen=True)
class RankError:
    """A rank failed; ``message`` is its one-line cause."""

    rank: int
    message: str
    type: ClassVar[str] = "error"


@dataclass(frozen=True)
class Result:
    """The run's result on rank 0: answers, timings and settings, as ``--json`` prints it."""

    result: dict
    type: ClassVar[str] = "result"


Event = Union[Stage, Note, Question, Token, AnswerEnd, PassStart, RankError, Result]
Emit = Callable[[Event], None]
KINDS: dict[str, type] = {kind.type: kind for kind in (Stage, Note, Question, Token, AnswerEnd, PassStart, RankError, Result)}


def to_json(event: Event) -> dict[str, Any]:
    return {"type": event.type, **dataclasses.asdict(event)}


def from_json(data: dict[str, Any]) -> Event:
    """The event a ``to_json`` dict describes; ValueError for anything else."""
    kind = KINDS.get(data.get("type")) if isinstance(data, dict) else None
    if kind is None:
        raise ValueError(f"not an event: {str(data)[:80]}")
    fields = {field.name for field in dataclasses.fields(kind)}
    try:
        return kind(**{key: value for key, value in data.items() if key in fields})
    except TypeError as exc:
        raise ValueError(f"a {kind.type} event without its fields: {exc}") from None


def discard(event: Event) -> None:
    """An ``Emit`` for ranks other than 0, which stay silent."""
