"""Bytes to text, or a verdict that the bytes are not text."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Share of replacement or stray control characters at which decoded bytes stop
# counting as text: compressed or random data fails to decode almost everywhere.
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
_CONTROL_CHARS = tuple(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r\f\v\x1b")
_BAD_CHARS = ("\ufffd",) + _CONTROL_CHARS

REASON_NUL = "binary (NUL bytes)"
REASON_UNDECODABLE = "binary (undecodable)"


class NotText(ValueError):
    """The bytes are not text; ``reason`` is the short skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """Decoded text, and how: ``note`` says what was assumed when the bytes were not plain UTF-8."""

    text: str
    note: str | None = None


def decode_text(data: bytes) -> str:
    """The text of ``data`` (see :func:`decode`)."""
    return decode(data).text


def decode(data: bytes) -> Decoded:
    """Decode file bytes to text, or raise :class:`NotText`.

    A byte-order mark decides the encoding when present, because UTF-16 and
    UTF-32 text is full of NUL bytes and would otherwise look binary. Without
    one, NUL bytes mean binary; then UTF-8 is tried strictly. Bytes that are
    mostly UTF-8 with a few invalid bytes stay UTF-8, the invalid bytes
    replaced; anything else is handed to a legacy-encoding detector. Line
    endings are normalised to ``\n`` so that the same text costs the same
    regardless of the platform that wrote it.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data[len(bom):].decode(encoding, errors="replace")
            _check_plausible(text)
            return Decoded(_normalise(text))
    if b"\x00" in data:
        raise NotText(REASON_NUL)
    try:
        return Decoded(_normalise(data.decode("utf-8")))
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", errors="replace")
    replaced = lenient.count("\ufffd")
    if _valid_multibyte(lenient, replaced) > replaced:
        # the replacements are already outweighed by valid UTF-8, however short the file
        _check_plausible(lenient, _CONTROL_CHARS)
        return Decoded(_normalise(lenient), f"not valid UTF-8: read as UTF-8 with {replaced} undecodable byte(s) replaced")
    return _legacy(data)


def _valid_multibyte(lenient: str, replaced: int) -> int:
    """Characters beyond ASCII that decoded as UTF-8: many of them mean the bytes are UTF-8 with
    a few damaged ones; none mean another encoding, whose accented letters are single bytes."""
    ascii_chars = len(lenient.encode("ascii", errors="ignore"))
    return len(lenient) - ascii_chars - replaced


# Western European text is the most common legacy text, and several single-byte code pages
# decode it equally well by the detector's measure (cp1250 turns "forêt" into "foręt"); among
# the equally good, windows-1252 (which agrees with latin-1 on every printable latin-1 byte) wins.
_PREFERRED_LEGACY = "cp1252"


# On short or plain text the detector's chaos measure often ranks a Baltic or Central European
# code page a little ahead of windows-1252 for Western text (French in latin-1 read as cp1257 turns
# "reçu" into "reįu"): within this margin, windows-1252 wins when every letter it gives is one
# Western European languages use.
_CHAOS_MARGIN = 0.25
_WESTERN_LETTERS = frozenset("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŸŒŠŽ")


def _reads_as_western(data: bytes) -> bool:
    letters = {ch for ch in data.decode(_PREFERRED_LEGACY, errors="replace") if ord(ch) > 127 and ch.isalpha()}
    return letters <= _WESTERN_LETTERS


# Short Western text with a few accented letters also fits a double-byte East Asian code page: an
# accented byte and the letter after it read as one ideograph ("reçu" as "re" + a Big5 character +
# ""). Real Chinese, Japanese or Korean text runs such characters together; read alone among ASCII
# letters, they are accented letters, and windows-1252 wins when it gives only Western letters.
_DOUBLE_BYTE = frozenset(("big5", "big5hkscs", "cp932", "cp949", "cp950", "euc_jis_2004", "euc_jisx0213", "euc_jp",
                          "euc_kr", "gb18030", "gb2312", "gbk", "hz", "johab", "shift_jis", "shift_jis_2004",
                          "shift_jisx0213"))


def _scattered_among_ascii(text: str) -> bool:
    """No two characters beyond ASCII side by side."""
    return not any(ord(a) > 127 and ord(b) > 127 for a, b in zip(text, text[1:]))


def _legacy(data: bytes) -> Decoded:
    """Text in a legacy encoding, as a well-kept detector judges it, or NotText."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise NotText(REASON_UNDECODABLE)
    least_chaos = min(m.chaos for m in matches)
    close = any(m.chaos <= least_chaos + _CHAOS_MARGIN and _PREFERRED_LEGACY in m.could_be_from_charset for m in matches)
    encoding = matches[0].encoding
    misread_ideographs = encoding in _DOUBLE_BYTE and _scattered_among_ascii(data.decode(encoding, errors="replace"))
    if (close or misread_ideographs) and _reads_as_western(data):
        encoding = _PREFERRED_LEGACY
    text = data.decode(encoding, errors="replace")
    _check_plausible(text)
    return Decoded(_normalise(text), f"not valid UTF-8: read as {encoding} (detected)")


def _check_plausible(text: str, counted: tuple[str, ...] = _BAD_CHARS) -> None:
    """Reject decoded text that is mostly replacement or control characters (``counted``)."""
    if not text:
        return
    # str.count per character runs in C; a Python loop over megabytes would not.
    bad = sum(text.count(ch) for ch in counted)
    if bad >= len(text) * MAX_BAD_FRACTION:
        raise NotText(REASON_UNDECODABLE)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")
