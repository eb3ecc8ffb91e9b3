"""Knobs that control ingestion."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestOptions:
    """What to read and how defensively to read it.

    ``max_file_bytes`` caps files found inside directories (a stray dump or
    data file should not swamp the context); files named explicitly are read
    whatever their size, since the user asked for them.
    ``include``/``exclude`` are fnmatch globs tested against each file's path
    relative to the directory given and against its basename; excludes also
    prune whole directories.
    ``password`` opens encrypted PDFs. The two ``pdf_max_*`` limits stop
    malformed or hostile PDFs from exhausting memory or time.
    """

    max_file_bytes: int = 1_000_000
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    password: str | None = None
    pdf_max_pages: int = 5000
    pdf_max_chars_per_page: int = 200_000
