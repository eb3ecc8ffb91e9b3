"""The user's include/exclude globs for files found inside directories."""

from __future__ import annotations

import posixpath
from fnmatch import fnmatchcase


class PathFilter:
    """Decide which paths (relative to the directory given, ``/``-separated) to read.

    A glob matches when it matches the whole relative path or just the
    basename, so both ``*.py`` and ``src/*.py`` work as expected. Excludes also
    apply to every parent directory, so ``--exclude build`` drops everything
    under any ``build`` directory rather than only a file of that name.
    Matching is case-sensitive everywhere so results do not depend on the OS.
    """

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = list(include)
        self.exclude = list(exclude)

    def excludes_dir(self, rel_dir: str) -> bool:
        """Whether a directory is excluded, so a walk need not enter it."""
        return _any_match(self.exclude, rel_dir)

    def accepts_file(self, rel_path: str) -> bool:
        """Whether a file passes the excludes (itself and its parents) and the includes."""
        if self.exclude:
            if _any_match(self.exclude, rel_path):
                return False
            parent = posixpath.dirname(rel_path)
            while parent:
                if _any_match(self.exclude, parent):
                    return False
                parent = posixpath.dirname(parent)
        return not self.include or _any_match(self.include, rel_path)


def _any_match(globs: list[str], rel_path: str) -> bool:
    base = posixpath.basename(rel_path)
    return any(fnmatchcase(rel_path, glob) or fnmatchcase(base, glob) for glob in globs)
