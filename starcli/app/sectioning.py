"""Cut a text longer than the model's window into window-sized sections at natural boundaries.

A long input is answered or summarized one section per model pass (see ``longdoc``), so where the
cuts fall matters: a section that starts mid-chapter gives the model a fragment. Cuts are taken at
the strongest boundary that keeps every section within its token budget:

    FILE       a ``=== path ===`` header, which ingestion writes before each file or input
    PAGE       a ``--- page N ---`` marker (PDF ingestion) or a form feed
    HEADING    a markdown heading, a ``Chapter 3`` / ``Part II`` line, or an underlined title
    PARAGRAPH  the first line after a blank line
    LINE       any other line start

and, for a single line longer than a whole section, at token level. Nothing is dropped: the
sections' token ranges tile ``[0, N)`` and their texts concatenate back to the input.

Everything here is plain integers and strings, so it is trivially testable.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Sequence

TOKEN, LINE, PARAGRAPH, HEADING, PAGE, FILE = range(6)

# The header Document.render writes before each part, and the combine step before each partial.
_FILE_HEADER = re.compile(r"=== .+ ===[ \t]*$")
_PDF_PAGE = re.compile(r"--- page \d+ ---[ \t]*$")
_MARKDOWN_HEADING = re.compile(r"#{1,6}[ \t]+\S")
_CHAPTER_LINE = re.compile(r"(chapter|part|book|section|appendix)[ \t]+([0-9]+|[ivxlcdm]+|[a-z])\b", re.IGNORECASE)
_UNDERLINE = re.compile(r"([=\-*~^#+])\1{2,}[ \t]*$")
# A "Chapter 3" line is a title, not a sentence that starts with the word.
_TITLE_MAX_CHARS = 80


@dataclass(frozen=True)
class Boundary:
    """A place where a section may start: character ``offset`` of a line start, and its strength."""

    offset: int
    level: int


def text_boundaries(text: str) -> list[Boundary]:
    """Every line start after the first (and every form feed), with the strongest level it has."""
    lines = text.splitlines(keepends=True)
    found: dict[int, int] = {}
    offset = 0
    previous_blank = False
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if offset > 0:
            level = LINE
            if previous_blank and body.strip():
                level = PARAGRAPH
            if _is_title(body, lines[index + 1] if index + 1 < len(lines) else ""):
                level = HEADING
            if _PDF_PAGE.fullmatch(body) or body.startswith("\f"):
                level = PAGE
            if _FILE_HEADER.fullmatch(body):
                level = FILE
            found[offset] = max(found.get(offset, TOKEN), level)
        previous_blank = not body.strip()
        offset += len(line)
    for match in re.finditer("\f", text):
        if match.start() > 0:
            found[match.start()] = max(found.get(match.start(), TOKEN), PAGE)
    return [Boundary(o, found[o]) for o in sorted(found)]


def _is_title(line: str, next_line: str) -> bool:
    if _MARKDOWN_HEADING.match(line):
        return True
    if len(line) <= _TITLE_MAX_CHARS and _CHAPTER_LINE.match(line.strip()):
        return True
    # a title underlined by a row of one punctuation character, about as long as the title
    stripped, underline = line.strip(), next_line.rstrip("\r\n").strip()
    return bool(stripped) and bool(_UNDERLINE.fullmatch(underline)) and abs(len(underline) - len(stripped)) <= 3


def token_boundaries(boundaries: Sequence[Boundary], token_starts: Sequence[int]) -> list[tuple[int, int]]:
    """(token index, level) for each boundary: the first token that starts at or after it.

    ``token_starts[i]`` is the character offset where token i starts (non-decreasing). A boundary
    inside a token moves to the next token; several boundaries on one token keep the strongest."""
    levels: dict[int, int] = {}
    for boundary in boundaries:
        index = bisect.bisect_left(token_starts, boundary.offset)
        if 0 < index < len(token_starts):
            levels[index] = max(levels.get(index, TOKEN), boundary.level)
    return sorted(levels.items())


def pack(sizes: Sequence[int], budget: int, target: float | None = None) -> list[tuple[int, int]]:
    """Group consecutive items into [start, end) index runs whose size sums stay within ``budget``.

    A run closes once it reaches ``target`` (default: the budget), so that a region cut into k
    runs gets k runs of similar size instead of k-1 full ones and a scrap. An item larger than the
    budget is a run of its own (the caller splits it further)."""
    target = budget if target is None else target
    runs: list[tuple[int, int]] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (total + size > budget or total >= target):
            runs.append((start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        runs.append((start, len(sizes)))
    return runs


def plan_sections(num_tokens: int, cuts: Sequence[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """[start, end) token ranges tiling [0, num_tokens), each at most ``budget`` tokens.

    ``cuts`` are (token index, level) places where a section may start. A span over the budget is
    split at its strongest cuts into pieces; consecutive pieces are packed into sections (a section
    never straddles one of those cuts unless it holds the pieces on both sides whole); a piece still
    over the budget is split the same way at the next weaker cuts, and a piece with no cut left is
    cut into equal token runs."""
    if budget < 1:
        raise ValueError(f"a section needs a budget of at least one token, got {budget}")
    if num_tokens <= 0:
        return []
    strongest: dict[int, int] = {}
    for t, level in cuts:
        if 0 < t < num_tokens:
            strongest[int(t)] = max(strongest.get(int(t), TOKEN), int(level))
    return _split(0, num_tokens, sorted(strongest.items()), budget)


def _split(lo: int, hi: int, cuts: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    size = hi - lo
    if size <= budget:
        return [(lo, hi)]
    inner = [(t, level) for t, level in cuts if lo < t < hi]
    sections_needed = -(-size // budget)
    if not inner:
        # one atom (a line) longer than a section: equal token runs, nothing dropped
        return [(lo + size * k // sections_needed, lo + size * (k + 1) // sections_needed) for k in range(sections_needed)]
    strongest = max(level for _, level in inner)
    points = [lo] + [t for t, level in inner if level == strongest] + [hi]
    pieces = list(zip(points, points[1:]))
    weaker = [(t, level) for t, level in inner if level < strongest]
    out: list[tuple[int, int]] = []
    for first, last in pack([b - a for a, b in pieces], budget, target=size / sections_needed):
        a, b = pieces[first][0], pieces[last - 1][1]
        out.extend(_split(a, b, weaker, budget) if b - a > budget else [(a, b)])
    return out


def char_ranges(text_length: int, token_starts: Sequence[int], sections: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character [start, end) of each token-range section; consecutive, covering the whole text.

    The first section starts at 0 and the last ends at ``text_length`` whatever the offsets say,
    so text outside every token (none, with the tokenizers we know) still belongs to a section."""
    ranges = []
    for index, (start, end) in enumerate(sections):
        a = 0 if index == 0 else token_starts[start]
        b = text_length if index == len(sections) - 1 else token_starts[end]
        ranges.append((a, b))
    return ranges


def section_texts(text: str, token_starts: Sequence[int], sections: Sequence[tuple[int, int]]) -> list[str]:
    """The text of each section; ``"".join(result) == text``."""
    return [text[a:b] for a, b in char_ranges(len(text), token_starts, sections)]
