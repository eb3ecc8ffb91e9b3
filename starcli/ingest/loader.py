"""Entry point: turn the inputs named on the command line into one Document."""

from __future__ import annotations

import codecs
import errno
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable
from typing import BinaryIO

from .content import bytes_to_text
from .pdf import looks_like_pdf
from .directory import read_directory
from .display import cited_path, display_path, plural
from .document import Document, Part, Skip
from .errors import SourceError
from .filesystem import NotRegularFile, describe_os_error, file_kind, read_regular_file
from .options import IngestOptions

STDIN_ARG = "-"
STDIN_PATH = "<stdin>"


def load_sources(
    sources: list[str],
    options: IngestOptions,
    stdin: BinaryIO | None = None,
    on_skip: Callable[[Skip], None] | None = None,
) -> Document:
    """Read files, directories, PDFs and ``-`` (standard input) into a Document.

    Parts keep the order of ``sources``; a directory's files follow in order of
    relative path. Problems with an input the user named are fatal
    (:class:`SourceError`); problems with files found inside a directory are
    reported through ``on_skip`` as they happen and listed in
    ``Document.skipped``. Raises :class:`SourceError` when no text results.
    """
    document = Document()
    notes: list[str] = []  # why inputs yielded nothing, for the final error
    dir_empty_files = 0
    stdin_read = False

    def report(skip: Skip) -> None:
        document.skipped.append(skip)
        if on_skip is not None:
            on_skip(skip)

    for source in sources:
        if source == STDIN_ARG:
            if stdin_read:
                continue  # the stream is spent; a repeated "-" adds nothing
            stdin_read = True
            part = _read_stdin(stdin, options)
            if part is None:
                notes.append("standard input is empty")
            else:
                document.parts.append(part)
            continue

        st = _stat_named(source)
        if stat.S_ISDIR(st.st_mode):
            result = read_directory(source, options, report)
            document.parts.extend(result.parts)
            dir_empty_files += result.empty
            if result.considered == 0:
                filtered = options.include or options.exclude
                matching = " matching the include/exclude globs" if filtered else ""
                notes.append(f"{display_path(source)} holds no files to read{matching}")
            continue

        part = _read_named_file(source, st, options)
        if part is None:
            notes.append(f"{display_path(source)} is empty")
        else:
            document.parts.append(part)

    if not document.parts:
        why = _explain_nothing(document, notes, dir_empty_files)
        raise SourceError(f"no text found in the input: {why}")
    return document


_STDIN_CHUNK = 1 << 20
# More than any window holds many times over, read in passes; an endless stream ends here.
STDIN_MAX_BYTES = 4 << 30
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _binary_start(chunk: bytes) -> bool:
    """NUL bytes in the first chunk of something that is neither a PDF nor UTF-16/32 text."""
    return b"\x00" in chunk and not looks_like_pdf("", chunk) and not chunk.startswith(_WIDE_BOMS)


def _read_stdin(stdin: BinaryIO | None, options: IngestOptions) -> Part | None:
    """Read standard input once, whole; ``None`` when it holds only whitespace."""
    if stdin is None:
        if sys.stdin is None:
            raise SourceError("standard input is not available")
        stdin = sys.stdin.buffer
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := stdin.read(_STDIN_CHUNK):
            if not chunks and _binary_start(chunk):
                # a device or a binary stream can be endless (/dev/zero): say so at once
                raise SourceError("standard input is binary (NUL bytes); only text and PDF can be read")
            chunks.append(chunk)
            size += len(chunk)
            if size > STDIN_MAX_BYTES:
                raise SourceError(f"standard input is over {STDIN_MAX_BYTES >> 30} GiB; save it to a file and "
                                  f"name the parts to read")
    except OSError as error:
        raise SourceError(f"cannot read standard input: {describe_os_error(error)}") from None
    data = b"".join(chunks)
    # Only the magic bytes can mark piped input as a PDF: it has no name.
    text, is_pdf, note = bytes_to_text(data, "", "standard input", options)
    if not text.strip():
        return None
    return Part(STDIN_PATH, text, "pdf" if is_pdf else "stdin", note)


def _stat_named(source: str) -> os.stat_result:
    """``stat`` an input the user named, turning each failure into its message."""
    if not source:
        raise SourceError("an empty path was given")
    shown = display_path(source)
    try:
        return os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceError(f"no such file or directory: {shown}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SourceError(f"cannot read {shown}: symlink loop") from None
        raise SourceError(f"cannot read {shown}: {describe_os_error(error)}") from None


def _read_named_file(source: str, st: os.stat_result, options: IngestOptions) -> Part | None:
    """Read a file the user named; ``None`` when it holds only whitespace.

    No size cap applies: the user asked for this file specifically. Anything
    but a regular file is refused before opening, because opening a FIFO
    waits for a writer and opening a device can have side effects.
    """
    shown = display_path(source)
    if not stat.S_ISREG(st.st_mode):
        kind = file_kind(st.st_mode)
        hint = "; pipe it into - instead" if kind == "FIFO" else ""
        raise SourceError(f"{shown} is not a regular file ({kind}){hint}")
    try:
        data = read_regular_file(source)
    except NotRegularFile as error:
        raise SourceError(f"{shown} is not a regular file ({error.kind})") from None
    except OSError as error:
        raise SourceError(f"cannot read {shown}: {describe_os_error(error)}") from None
    text, is_pdf, note = bytes_to_text(data, os.path.basename(source), shown, options)
    if not text.strip():
        return None
    return Part(display_path(cited_path(source)), text, "pdf" if is_pdf else "file", note)


def _explain_nothing(document: Document, notes: list[str], dir_empty_files: int) -> str:
    """Summarise why no text came out, e.g. ``3 files skipped (2 binary, 1 over size cap)``."""
    reasons = []
    if document.skipped:
        counts = Counter(skip.category for skip in document.skipped)
        breakdown = ", ".join(
            f"{count} {category}"
            for category, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        )
        reasons.append(f"{plural(len(document.skipped), 'file')} skipped ({breakdown})")
    if dir_empty_files:
        reasons.append(f"{plural(dir_empty_files, 'empty file')} in directories")
    reasons.extend(notes)
    return "; ".join(reasons) if reasons else "no inputs were given"
