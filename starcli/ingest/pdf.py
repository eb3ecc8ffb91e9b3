"""Text extraction from PDF files, defensive against hostile or broken ones."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

from pypdf import PasswordType, PdfReader

from .errors import Rejected

PDF_MAGIC = b"%PDF-"


class _TooMuchText(Exception):
    """Raised from inside extraction to stop a page that never ends."""


def looks_like_pdf(name: str, head: bytes) -> bool:
    """Whether a file should go to the PDF reader: by magic bytes, or by suffix.

    The magic must open the file: text files that merely mention it (source
    code, notes about PDFs) are common, while PDFs with junk before the header
    nearly always carry the suffix anyway.
    """
    return head.startswith(PDF_MAGIC) or name.lower().endswith(".pdf")


def extract_pdf_text(
    data: bytes,
    path: str,
    password: str | None,
    max_pages: int,
    max_chars_per_page: int,
) -> str:
    """Return the text of every page, each after a ``--- page N ---`` marker.

    Raises :class:`Rejected` for encrypted files that cannot be opened, files
    with no text layer, files over the page or per-page text limits, and any
    failure inside the PDF library, whose exceptions are not part of a stable
    contract and must never escape as a traceback.
    """
    with _quiet_pdf_library():
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                _unlock(reader, path, password)
            page_count = len(reader.pages)
            if page_count > max_pages:
                raise Rejected(
                    f"{path} has {page_count:,} pages, over the limit of {max_pages:,}; "
                    "split it or raise the page limit",
                    f"too many pages ({page_count:,} > {max_pages:,})",
                )
            chunks = []
            for number, page in enumerate(reader.pages, start=1):
                text = _page_text(page, number, page_count, path, max_chars_per_page)
                if text:
                    chunks.append(f"--- page {number} ---\n{text}\n")
        except Rejected:
            raise
        except Exception as error:  # the library raises many unrelated types
            detail = _short(error)
            raise Rejected(
                f"cannot read PDF {path}: {detail}", f"unreadable PDF ({detail})"
            ) from error
    if not chunks:
        raise Rejected(
            f"{path} has no extractable text (scanned images?); OCR it first",
            "no extractable text (scanned images?)",
        )
    return "".join(chunks)


def _unlock(reader: PdfReader, path: str, password: str | None) -> None:
    """Open an encrypted PDF: the empty password first (many PDFs are
    encrypted only to carry permission flags), then the one the user gave."""
    if reader.decrypt("") != PasswordType.NOT_DECRYPTED:
        return
    if password is None:
        raise Rejected(f"{path} is encrypted: pass --password", "encrypted (pass --password)")
    if reader.decrypt(password) == PasswordType.NOT_DECRYPTED:
        raise Rejected(f"wrong password for {path}", "encrypted (wrong password)")


def _page_text(page, number: int, page_count: int, path: str, limit: int) -> str:
    """Extract one page in plain mode, aborting as soon as it yields over ``limit`` characters.

    Counting inside the extraction callback stops a page whose content stream
    repeats text endlessly before its output fills memory; the final length
    check covers text the callback does not see.
    """
    produced = 0

    def count(text, *_ignored) -> None:
        nonlocal produced
        produced += len(text)
        if produced > limit:
            raise _TooMuchText

    try:
        text = page.extract_text(visitor_text=count) or ""
    except _TooMuchText:
        text = None
    if text is None or len(text) > limit:
        raise Rejected(
            f"page {number} of {path} yields over {limit:,} characters; "
            "the file is malformed or built to exhaust memory",
            f"too much text (page {number} of {page_count} yields over {limit:,} characters)",
        )
    # NULs come from fonts without a usable character map; they carry nothing.
    return text.replace("\x00", "").strip()


@contextlib.contextmanager
def _quiet_pdf_library() -> Iterator[None]:
    """Keep the PDF library's warnings about recoverable defects off stderr.

    Those warnings describe repairs it made, which the user cannot act on;
    anything fatal reaches the user as our own message instead.
    """
    logger = logging.getLogger("pypdf")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(previous)


def _short(error: BaseException) -> str:
    """First line of an exception message, trimmed, or its type when it has none."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if not text:
        return type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
