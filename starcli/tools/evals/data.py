"""Samples from a JSONL file, and the score of an answer.

One sample per line: ``{"id", "task", "length", "context", "question", "answers": [...],
"max_new_tokens"}``, the same fields ``Sample`` has, so generated suites can be written out, edited
and fed back with ``--data``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InputError
from .tasks import Sample


class EvalDataError(InputError, ValueError):
    """A data file cannot be used; the message is one line naming the file and line."""


# field -> (accepted types, what the message calls it)
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "a string"),
    "task": ((str,), "a string"),
    "length": ((int,), "a positive integer"),
    "context": ((str,), "a string"),
    "question": ((str,), "a non-empty string"),
    "answers": ((list,), "a non-empty list of strings"),
    "max_new_tokens": ((int,), "a positive integer"),
}


def _field_ok(name: str, value) -> bool:
    types, _ = _FIELDS[name]
    # bool is an int subclass, but true is not a length
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    if name in ("length", "max_new_tokens"):
        return value > 0
    if name in ("question", "task"):
        return bool(value.strip())
    if name == "answers":
        return bool(value) and all(isinstance(a, str) and a.strip() for a in value)
    return True


def parse_sample(line: str, where: str) -> Sample:
    """One JSONL line into a ``Sample``; ``where`` ("file:line") prefixes every error."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise EvalDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [name for name in _FIELDS if name not in record]
    if missing:
        raise EvalDataError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name, (_, expected) in _FIELDS.items():
        if not _field_ok(name, record[name]):
            raise EvalDataError(f"{where}: field {name!r} must be {expected}")
    return Sample(
        id=str(record["id"]),
        task=record["task"],
        length=record["length"],
        context=record["context"],
        question=record["question"],
        answers=list(record["answers"]),
        max_new_tokens=record["max_new_tokens"],
    )


def read_jsonl(path: str | Path) -> list[Sample]:
    """All samples of a JSONL file; blank lines are skipped, ids must be unique."""
    from ..paths import is_regular_file

    path = Path(path)
    if path.exists() and not is_regular_file(path):
        raise EvalDataError(f"{path}: not a regular file (a FIFO or a device would never end)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{path}: cannot read ({exc})") from None
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        sample = parse_sample(line, f"{path}:{number}")
        if sample.id in seen:
            raise EvalDataError(f"{path}:{number}: id {sample.id!r} already used on line {seen[sample.id]}")
        seen[sample.id] = number
        samples.append(sample)
    if not samples:
        raise EvalDataError(f"{path}: no samples")
    return samples


def write_jsonl(samples: list[Sample], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for sample in samples:
            out.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")


def score(output: str, answers: list[str]) -> float:
    """The fraction of ``answers`` found in ``output``, ignoring case: the string-match metric of
    synthetic long-context suites, which checks content rather than phrasing."""
    if not answers:
        return 0.0
    found = output.casefold()
    return sum(answer.casefold() in found for answer in answers) / len(answers)
