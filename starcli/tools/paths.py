"""Files the bench and eval name on their command line, checked before a run that can take hours."""

from __future__ import annotations

import stat
from pathlib import Path

from ..errors import UsageError


def check_output_file(path: str | Path, option: str) -> None:
    """``path`` can be created or replaced as a file: its folder exists, and it is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; name a file in it")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {path.parent} does not exist")


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (after symlinks); FIFOs and devices would block or never end."""
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False
