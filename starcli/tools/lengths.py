"""Token counts as the tools' options write them: ``4096``, ``4k``, ``1.5k``, ``1m`` (k = 1024, m = 1024²,
the binary multiples context windows are sized in)."""

from __future__ import annotations

from ..errors import UsageError

_SUFFIXES = {"k": 1024, "m": 1024 * 1024}


def parse_length(text: str, option: str, zero: bool = False) -> int:
    """One count; ``zero`` admits 0 (a relay of nothing)."""
    item = text.strip().lower()
    scale = _SUFFIXES.get(item[-1:], 1)
    digits = item[:-1] if item[-1:] in _SUFFIXES else item
    try:
        number = float(digits) if "." in digits else int(digits)
    except ValueError:
        number = None
    value = None if number is None else number * scale
    if value is None or value != int(value) or value < 0 or (value == 0 and not zero):
        raise UsageError(f"{option}: cannot read {text.strip()!r}; use positive token counts like 4096, 32k or 1m")
    return int(value)


def parse_lengths(text: str, option: str = "--lengths", zero: bool = False) -> list[int]:
    """A comma list of counts, in the order given."""
    items = str(text).split(",")
    if not str(text).strip() or any(not item.strip() for item in items):
        raise UsageError(f"{option}: empty entry in {text!r}")
    return [parse_length(item, option, zero) for item in items]
