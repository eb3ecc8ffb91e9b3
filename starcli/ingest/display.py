"""Formatting helpers for paths and sizes shown to the user."""

from __future__ import annotations

import os


def display_path(path: str) -> str:
    """Return ``path`` in a form that is safe to print and to embed in a prompt.

    File names may hold undecodable bytes (kept as lone surrogates by the
    filesystem encoding) or control characters such as newlines. The first
    would crash a strict UTF-8 writer; the second could forge a part header
    inside the rendered document. Both are replaced by visible escapes.
    """
    out = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def cited_path(path: str) -> str:
    """The path an input the user named is cited by in the document (its part header).

    The header is part of what the model reads, so it decides the token ids and with them the
    document cache entry. A path inside the current directory is cited relative to it, so
    ``doc.txt``, ``./doc.txt`` and its absolute path give one prompt and one cache entry; a path
    outside it is cited as given, normalised (``a//b/`` is ``a/b``).
    """
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was removed: nothing to be relative to
        return os.path.normpath(path)
    absolute = os.path.abspath(path)
    if absolute == cwd:
        return "."
    if os.path.commonpath([absolute, cwd]) == cwd:
        return os.path.relpath(absolute, cwd)
    return os.path.normpath(path)


def human_size(n: int) -> str:
    """Decimal size with one decimal place, e.g. ``2.1 MB``; plain bytes below 1 kB."""
    if n < 1000:
        return f"{n} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n < scale * 1000 or unit == "GB":
            return f"{n / scale:.1f} {unit}"
    raise AssertionError("unreachable")


def plural(n: int, word: str) -> str:
    """``1 file`` / ``3 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
