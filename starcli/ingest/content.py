"""Turn one input's bytes into text: PDF extraction or text decoding."""

from __future__ import annotations

from .decoding import NotText, decode
from .errors import Rejected
from .options import IngestOptions
from .pdf import extract_pdf_text, looks_like_pdf


def bytes_to_text(data: bytes, name: str, shown: str, options: IngestOptions) -> tuple[str, bool, str | None]:
    """Return ``(text, is_pdf, note)`` for the bytes of the input shown to the user as ``shown``;
    ``note`` says which encoding was assumed for text that is not plain UTF-8.

    ``name`` is the file name used for suffix-based PDF detection (empty for
    standard input, where only the magic bytes count). Raises
    :class:`Rejected` when the bytes yield no usable text.
    """
    if looks_like_pdf(name, data):
        text = extract_pdf_text(
            data,
            shown,
            password=options.password,
            max_pages=options.pdf_max_pages,
            max_chars_per_page=options.pdf_max_chars_per_page,
        )
        return text, True, None
    try:
        decoded = decode(data)
        return decoded.text, False, decoded.note
    except NotText as verdict:
        raise Rejected(
            f"{shown} is {verdict.reason}; only text and PDF files can be read", verdict.reason
        ) from None
