"""Bytes to text, or a verdict that the bytes are not text."""

from __future__ import annotations

import codecs

# Share of replacement or stray control characters at which bytes stop counting
# as text. Small enough that a latin-1 file with a few accented letters still
# reads (each becomes U+FFFD), large enough that compressed or random data,
# which fails to decode almost everywhere, does not.
MAX_BAD_FRACTION = 0.05

# Checked longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Characters that count against plausibility: the replacement character plus
# the C0 controls that real text does not contain (tab, newlines, form feed and
# escape, used by coloured logs, are fine).
_BAD_CHARS = ("\ufffd",) + tuple(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r\f\v\x1b")

REASON_NUL = "binary (NUL bytes)"
REASON_UNDECODABLE = "binary (undecodable)"


class NotText(ValueError):
    """The bytes are not text; ``reason`` is the short skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_text(data: bytes) -> str:
    """Decode file bytes to text, or raise :class:`NotText`.

    A byte-order mark decides the encoding when present, because UTF-16 and
    UTF-32 text is full of NUL bytes and would otherwise look binary. Without
    one, NUL bytes mean binary; then UTF-8 is tried strictly and, failing that,
    leniently, keeping the result only when little of it had to be replaced.
    Line endings are normalised to ``\\n`` so that the same text costs the same
    regardless of the platform that wrote it.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data[len(bom):].decode(encoding, errors="replace")
            _check_plausible(text)
            return _normalise(text)
    if b"\x00" in data:
        raise NotText(REASON_NUL)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        _check_plausible(text)
    return _normalise(text)


def _check_plausible(text: str) -> None:
    """Reject decoded text that is mostly replacement or control characters."""
    if not text:
        return
    # str.count per character runs in C; a Python loop over megabytes would not.
    bad = sum(text.count(ch) for ch in _BAD_CHARS)
    if bad >= len(text) * MAX_BAD_FRACTION:
        raise NotText(REASON_UNDECODABLE)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")
