"""Walk a directory outside git, honouring the ``.gitignore`` files inside it."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from .filesystem import read_regular_file
from .gitignore import Rule, is_ignored, parse_gitignore

# A .gitignore larger than this is not a real one; reading it whole would be a
# cheap way to stall the walk.
_MAX_GITIGNORE_BYTES = 1_000_000

# Folders of installed dependencies, environments and tool caches: in a git repository they are
# ignored, and outside one they would drown the sources (a node_modules can hold a million lines).
# Skipped and reported unless an --include pattern names them; a folder given itself is read.
TOOL_DIRS = frozenset({"node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".hg", ".svn", "bower_components", ".gradle", ".idea"})


@dataclass
class WalkResult:
    """Candidate files (relative, ``/``-separated, sorted) and unlistable directories."""

    files: list[str] = field(default_factory=list)
    unreadable_dirs: list[tuple[str, OSError]] = field(default_factory=list)
    tool_dirs: list[str] = field(default_factory=list)  # skipped as TOOL_DIRS


def walk_files(root: str, excludes_dir: Callable[[str], bool], keep_tool_dirs: frozenset[str] = frozenset()) -> WalkResult:
    """List the files under ``root`` that git would consider, without needing git.

    Symlinks are never followed, so a link to a directory shows up as a single
    entry for the caller to judge (it may leave the directory or loop) rather
    than being entered. ``.git`` directories are always skipped, and so are
    directories that ``excludes_dir`` rejects: nothing inside them could be read.
    ``TOOL_DIRS`` other than ``keep_tool_dirs`` are skipped and listed in ``tool_dirs``.
    """
    result = WalkResult()
    rules_by_dir: dict[str, list[Rule]] = {}

    def on_error(error: OSError) -> None:
        where = error.filename if isinstance(error.filename, str) else root
        result.unreadable_dirs.append((_relative(root, where), error))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        rel_dir = _relative(root, dirpath)
        rules = rules_by_dir.get(posixpath.dirname(rel_dir) if rel_dir else None, [])
        if ".gitignore" in filenames:
            rules = rules + _read_rules(os.path.join(dirpath, ".gitignore"), rel_dir)
        rules_by_dir[rel_dir] = rules

        kept_dirs = []
        for name in dirnames:
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if name == ".git":
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                # git records a symlink as a file, whatever it points to.
                if not is_ignored(rules, rel, is_dir=False):
                    result.files.append(rel)
                continue
            if is_ignored(rules, rel, is_dir=True) or excludes_dir(rel):
                continue
            if name in TOOL_DIRS and name not in keep_tool_dirs:
                result.tool_dirs.append(rel)
                continue
            kept_dirs.append(name)
        dirnames[:] = kept_dirs  # prunes the walk in place

        for name in filenames:
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            # A file named .git marks a linked work tree or submodule, not content.
            if name != ".git" and not is_ignored(rules, rel, is_dir=False):
                result.files.append(rel)

    result.files.sort()
    return result


def _read_rules(path: str, rel_dir: str) -> list[Rule]:
    """Rules of one ``.gitignore``; an unreadable one is treated as empty, as git does."""
    try:
        data = read_regular_file(path, limit=_MAX_GITIGNORE_BYTES, follow_symlinks=False)
    except OSError:
        return []
    return parse_gitignore(data.decode("utf-8", errors="replace"), rel_dir)


def _relative(root: str, path: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators; ``""`` for the root itself."""
    rel = os.path.relpath(path, root)
    if rel == os.curdir:
        return ""
    return rel.replace(os.sep, "/")
