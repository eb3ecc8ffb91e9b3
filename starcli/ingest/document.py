"""The ingested document: the text parts read and the files passed over."""

from __future__ import annotations

from dataclasses import dataclass, field

from .display import display_path


@dataclass
class Part:
    """Text of one input, under the path it is cited by.

    ``kind`` is ``"file"`` (a text file), ``"pdf"`` (text extracted from a PDF,
    with page markers) or ``"stdin"`` (text read from standard input).
    """

    path: str
    text: str
    kind: str
    note: str | None = None  # how the bytes were decoded, when not plain UTF-8 (told the user)


@dataclass
class Skip:
    """A file inside a directory that was not read, and why."""

    path: str
    reason: str

    @property
    def category(self) -> str:
        """The reason without its detail, e.g. ``over size cap`` for summaries."""
        return self.reason.split(" (", 1)[0]


@dataclass
class Document:
    """Everything read from the user's inputs, in a stable order."""

    parts: list[Part] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def render(self) -> str:
        """Concatenate the parts into the text given to the model.

        Each part gets a ``=== path ===`` header so that answers can cite the
        file (and, for PDFs, the page markers inside it). Text piped through
        standard input on its own has nothing to cite, so it goes through bare.
        """
        if len(self.parts) == 1 and self.parts[0].kind == "stdin":
            return _with_final_newline(self.parts[0].text)
        blocks = [
            f"=== {display_path(part.path)} ===\n{_with_final_newline(part.text)}"
            for part in self.parts
        ]
        return "\n".join(blocks)

    @property
    def total_chars(self) -> int:
        """Characters of text across all parts (headers not counted)."""
        return sum(len(part.text) for part in self.parts)


def _with_final_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
