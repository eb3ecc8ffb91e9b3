"""Inputs longer than the model's window: summarize or answer them in window-sized passes.

Star Attention makes one long pass cheap, but it does not extend the positions a model was trained
on: a 150K-token book does not fit a 32K model however it is encoded. So a longer input is read in
passes, each of which fits the window and uses Star Attention inside it:

- summary (``summarize``): cut the input into sections at natural boundaries
  (``starcli.app.sectioning``), summarize each section in its own pass ("part 3 of 7"), then combine the
  section summaries, in document order, into one summary of the whole. While the summaries do not
  fit one pass together, consecutive groups of them are summarized first (one more level each time).
- map (``ask --long map``): ask every section the question ("answer from this part only"), then
  combine the partial answers the same way.

What the model reads and is asked is decided here; the passes run through ``Passes.run``
(``starcli.app.passes``), the same prompt, job and engine path as a one-pass ``ask``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import StarcliError
from .sectioning import plan_sections, pack, section_texts, text_boundaries, token_boundaries

STRATEGIES = ("summary", "map")
# Tokens kept free in every pass: a section re-tokenised inside its prompt can differ by a token
# or two from its slice of the whole input's tokens.
MARGIN_TOKENS = 8
# Re-plans when a measured pass still overflows (each re-plan shrinks the budget by the overflow).
_FIT_ATTEMPTS = 4
# Combine levels before giving up: each level at least halves the number of partials.
_MAX_LEVELS = 32
# Stand-in part numbers for measuring the longest a section question can get.
_WIDEST_PART = 99999


class LongInputError(StarcliError):
    """A one-line reason the long input cannot be processed (``code`` 2 when an option is the cause)."""


@dataclass(frozen=True)
class Pass:
    """One model call: a document and the questions asked about it (each answered separately over
    the same encoding). ``kind`` is ``section``, ``combine`` (a group of partials) or ``final``
    (streamed to stdout); ``heading`` is printed before a streamed answer when there are several."""

    document: str
    questions: list[str]
    kind: str
    label: str
    heading: str | None = None


class Passes(Protocol):
    """What the strategy needs from the model side."""

    window: int  # most tokens one pass may hold: prompt + answer
    answer_tokens: int  # most tokens one answer may take

    def token_starts(self, text: str) -> list[int]:
        """Character offset where each token of ``text`` starts."""

    def prompt_tokens(self, document: str, question: str) -> int:
        """Tokens of the prompt (document part + question part) for this document and question."""

    def run(self, passes: list[Pass]) -> list[list[str]]:
        """Each pass's answers, one per question, in order."""


@dataclass
class Section:
    index: int  # 1-based, as the model is told ("part 3 of 7")
    tokens: tuple[int, int]  # [start, end) in the whole input's tokens
    text: str


@dataclass
class LongRun:
    """What a long-input run did, for the report and ``--json``."""

    strategy: str
    input_tokens: int
    window: int
    section_budget: int
    sections: list[Section]
    partials: list[list[str]]  # per question: one answer (or summary) per section, in order
    finals: list[str]  # per question: the combined answer
    combine_levels: int = 0  # levels of group combines before the final pass
    passes: dict[str, int] = field(default_factory=dict)  # kind -> count


@dataclass(frozen=True)
class _Partial:
    first: int  # parts covered, 1-based, inclusive
    last: int
    text: str


# --- what each pass asks ----------------------------------------------------------------------------

def section_words(answer_tokens: int) -> int:
    """Length to ask of a section summary: what fits its answer tokens (about 1.3 tokens a word,
    with slack so it ends before the cut), and never so long that combining gets expensive."""
    return min(250, max(10, int(answer_tokens * 0.55)))


def summary_section_question(part: int, total: int, words: int) -> str:
    return (
        f"The document above is part {part} of {total} of a longer document. Summarize this part in at "
        f"most about {words} words, covering it from beginning to end, in order, and naming the files, "
        "chapters or sections it contains. Write only the summary."
    )


def summary_group_question(first: int, last: int, total: int) -> str:
    return (
        f"The document above holds, in order, summaries of parts {first} to {last} of a {total}-part "
        "document. Merge them into one summary of those parts, in order, keeping the names of files, "
        "chapters and sections."
    )


# what every summary of a whole document is asked to cover
_WHOLE = "Cover it from beginning to end, in order, and name the main parts (files, chapters or sections) it consists of."


def summary_question(words: int | None) -> str:
    """What ``summarize`` asks of an input that fits one pass."""
    length = f" in about {words} words" if words else ""
    return f"Summarize the document above{length}. {_WHOLE}"


def summary_final_question(total: int, words: int | None) -> str:
    length = f" in about {words} words" if words else ""
    return (f"The document above holds, in order, summaries of all {total} parts of a longer document. Write "
            f"one summary of the whole document{length}. {_WHOLE}")


def map_section_question(question: str, part: int, total: int) -> str:
    return (
        f"{question}\n\n(The document above is part {part} of {total} of a longer document. Answer from "
        "this part only; if it does not contain the answer, say so in one sentence.)"
    )


def map_combine_question(question: str, first: int, last: int, total: int) -> str:
    which = f"the {total} parts" if (first, last) == (1, total) else f"parts {first} to {last} of the {total} parts"
    return (
        f"The document above holds, in order, answers to the question below, each taken from one of "
        f"{which} of a longer document. Combine them into one answer to the question, keeping "
        f"everything relevant and ignoring parts that did not contain the answer.\n\nQuestion: {question}"
    )


_SENTENCE_END = re.compile(r"[.!?][\"')`*]*(?=\s)")
_ENDS_A_SENTENCE = re.compile(r"[.!?][\"')`*]*$")


def complete_sentences(answer: str) -> str:
    """A partial answer without the unfinished sentence that ``--max-new-tokens`` cut off.

    The combine step reads partials as finished text; a fragment at the end of one ("... is
    equivalent to: with") tends to be continued or copied into the answer. The fragment goes only
    when at least half of the answer is left."""
    text = answer.rstrip()
    if not text or _ENDS_A_SENTENCE.search(text):
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) // 2 else text


def _parts_label(partial: _Partial, total: int) -> str:
    if partial.first == partial.last:
        return f"part {partial.first} of {total}"
    return f"parts {partial.first}-{partial.last} of {total}"


def render_partials(partials: list[_Partial], total: int) -> str:
    """The partials as one document, each under a ``=== part i of n ===`` header (the header
    ingestion writes before each file, so sectioning sees it as the strongest boundary)."""
    return "\n".join(f"=== {_parts_label(p, total)} ===\n{p.text.strip()}\n" for p in partials)


# --- sectioning the input ------------------------------------------------------------------------

def _budget(passes: Passes, questions: list[str], what: str) -> int:
    """Document tokens a pass asking ``questions`` can hold; an error when there is no room."""
    prompt = max(passes.prompt_tokens("", q) for q in questions)
    budget = passes.window - passes.answer_tokens - prompt - MARGIN_TOKENS
    if budget < 1:
        raise LongInputError(
            f"a window of {passes.window} tokens cannot hold a {what} pass: its prompt takes {prompt} tokens "
            f"and the answer up to {passes.answer_tokens}; raise --window or lower --max-new-tokens", code=2)
    return budget


def _needed(passes: Passes, document: str, questions: list[str]) -> int:
    return max(passes.prompt_tokens(document, q) for q in questions) + passes.answer_tokens


def _join_empty(ranges: list[tuple[int, int]], texts: list[str]) -> list[tuple[tuple[int, int], str]]:
    """Token ranges with their texts, a range left without text joined to the next one.

    Tokens that share one character (a multi-byte character split at token level) can leave a
    range no text: its character went to the next section, and so do its tokens here."""
    joined: list[tuple[tuple[int, int], str]] = []
    start = None
    for (a, b), text in zip(ranges, texts):
        start = a if start is None else start
        if text:
            joined.append(((start, b), text))
            start = None
    if start is not None and joined:  # an empty last range: its tokens end the previous one
        (a, _), text = joined[-1]
        joined[-1] = ((a, ranges[-1][1]), text)
    return joined


def split_input(text: str, questions_for: Callable[[int, int], list[str]], passes: Passes) -> tuple[list[Section], int, int]:
    """(sections, the budget they were cut to, the input's token count): every section's pass,
    with the questions ``questions_for(part, total)``, fits the window."""
    starts = passes.token_starts(text)
    cuts = token_boundaries(text_boundaries(text), starts)
    budget = _budget(passes, questions_for(_WIDEST_PART, _WIDEST_PART), "section")
    for _ in range(_FIT_ATTEMPTS):
        ranges = plan_sections(len(starts), cuts, budget)
        texts = section_texts(text, starts, ranges)
        sections = [Section(i + 1, r, t) for i, (r, t) in enumerate(_join_empty(ranges, texts))]
        overflow = max(_needed(passes, s.text, questions_for(s.index, len(sections))) - passes.window for s in sections)
        if overflow <= 0:
            return sections, budget, len(starts)
        budget -= overflow + MARGIN_TOKENS
        if budget < 1:
            break
    raise LongInputError(f"could not cut the input into sections that fit a window of {passes.window} tokens; raise --window")


def _check_combinable(passes: Passes, group_question: str) -> None:
    """Combining must at least halve the partials at each level: a pass must hold two of them."""
    prompt = passes.prompt_tokens("", group_question)
    header = passes.prompt_tokens(render_partials([_Partial(_WIDEST_PART, _WIDEST_PART, "x")], _WIDEST_PART), group_question) - prompt
    smallest = prompt + MARGIN_TOKENS + 2 * (passes.answer_tokens + header) + passes.answer_tokens
    if passes.window < smallest:
        raise LongInputError(
            f"a window of {passes.window} tokens is too small to read the input in passes: combining needs at least "
            f"{smallest} (a {prompt}-token prompt, two partial answers and the answer, each up to "
            f"{passes.answer_tokens} tokens); raise --window or lower --max-new-tokens", code=2)


# --- combining partials ----------------------------------------------------------------------------

def _groups(partials: list[_Partial], total: int, question_for: Callable[[int, int], str], passes: Passes) -> list[tuple[int, int]]:
    """Runs of consecutive partials that each fit one combine pass, as few as possible."""
    widest = question_for(1, total)
    budget = _budget(passes, [widest], "combine")
    sizes = [len(passes.token_starts(render_partials([p], total) + "\n")) for p in partials]
    for _ in range(_FIT_ATTEMPTS):
        runs = pack(sizes, budget)
        overflow = max(
            _needed(passes, render_partials(partials[a:b], total), [question_for(partials[a].first, partials[b - 1].last)])
            - passes.window for a, b in runs)
        if overflow <= 0:
            return runs
        budget -= overflow + MARGIN_TOKENS
        if budget < 1:
            break
    raise LongInputError(f"a partial answer does not fit a combine pass in a window of {passes.window} tokens; lower --max-new-tokens")


def combine(partials: list[_Partial], total: int, final_question: str, group_question: Callable[[int, int], str],
            passes: Passes, heading: str | None, counts: dict[str, int]) -> tuple[str, int]:
    """(the final answer, combine levels used): partials merged in order until they fit one pass."""
    for level in range(_MAX_LEVELS):
        document = render_partials(partials, total)
        if _needed(passes, document, [final_question]) <= passes.window:
            label = f"combining {len(partials)} partial{'s' if len(partials) > 1 else ''}"
            answer = passes.run([Pass(document, [final_question], "final", label, heading)])[0][0]
            counts["final"] = counts.get("final", 0) + 1
            return answer, level
        runs = _groups(partials, total, group_question, passes)
        if len(runs) >= len(partials):
            raise LongInputError("the partial answers do not shrink when combined; raise --window or lower --max-new-tokens")
        jobs = []
        for a, b in runs:
            first, last = partials[a].first, partials[b - 1].last
            jobs.append(Pass(render_partials(partials[a:b], total), [group_question(first, last)], "combine",
                             f"combine parts {first}-{last} of {total} (level {level + 1})"))
        answers = passes.run(jobs)
        counts["combine"] = counts.get("combine", 0) + len(jobs)
        partials = [_Partial(partials[a].first, partials[b - 1].last, complete_sentences(got[0])) for (a, b), got in zip(runs, answers)]
    raise LongInputError(f"combining did not finish within {_MAX_LEVELS} levels")


# --- the two strategies ---------------------------------------------------------------------------

def summarize_long(text: str, words: int | None, passes: Passes) -> LongRun:
    """Hierarchical summary: each section, then the section summaries combined in order."""
    per_section = section_words(passes.answer_tokens)
    _check_combinable(passes, summary_group_question(_WIDEST_PART, _WIDEST_PART, _WIDEST_PART))
    sections, budget, input_tokens = split_input(text, lambda i, n: [summary_section_question(i, n, per_section)], passes)
    total = len(sections)
    answers = passes.run([
        Pass(s.text, [summary_section_question(s.index, total, per_section)], "section", f"section {s.index}/{total}")
        for s in sections
    ])
    counts = {"section": total}
    summaries = [complete_sentences(got[0]) for got in answers]
    partials = [_Partial(s.index, s.index, summary) for s, summary in zip(sections, summaries)]
    final, levels = combine(partials, total, summary_final_question(total, words),
                            lambda a, b: summary_group_question(a, b, total), passes, None, counts)
    return LongRun("summary", input_tokens, passes.window, budget, sections, [summaries], [final], levels, counts)


def answer_long(text: str, questions: list[str], passes: Passes) -> LongRun:
    """Map: every section answers every question, then each question's answers are combined."""
    _check_combinable(passes, map_combine_question(max(questions, key=len), _WIDEST_PART, _WIDEST_PART, _WIDEST_PART))
    sections, budget, input_tokens = split_input(
        text, lambda i, n: [map_section_question(q, i, n) for q in questions], passes)
    total = len(sections)
    answers = passes.run([
        Pass(s.text, [map_section_question(q, s.index, total) for q in questions], "section", f"section {s.index}/{total}")
        for s in sections
    ])
    counts = {"section": total}
    partials_per_question = [[complete_sentences(got[q]) for got in answers] for q in range(len(questions))]
    finals, levels = [], 0
    for q, (question, partial_answers) in enumerate(zip(questions, partials_per_question)):
        partials = [_Partial(s.index, s.index, a) for s, a in zip(sections, partial_answers)]
        final, used = combine(partials, total, map_combine_question(question, 1, total, total),
                              lambda a, b, question=question: map_combine_question(question, a, b, total), passes,
                              question if len(questions) > 1 else None, counts)
        finals.append(final)
        levels = max(levels, used)
    return LongRun("map", input_tokens, passes.window, budget, sections, partials_per_question, finals, levels, counts)
