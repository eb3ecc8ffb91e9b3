"""Read every usable file of a directory the user gave."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from .content import bytes_to_text
from .display import cited_path, display_path, human_size
from .document import Part, Skip
from .errors import Rejected, SourceError
from .filesystem import NotRegularFile, describe_os_error, file_kind, read_regular_file
from .filters import PathFilter
from .gitfiles import list_git_files
from .options import IngestOptions
from .walking import TOOL_DIRS, walk_files


@dataclass
class DirectoryResult:
    """What one directory contributed, plus counts that explain an empty result."""

    parts: list[Part] = field(default_factory=list)
    considered: int = 0  # files listed and passing the filters
    empty: int = 0  # files read but holding only whitespace


class _Silent(Exception):
    """A listed entry to pass over without a report (its content appears elsewhere)."""


class _Skipped(Exception):
    """A listed entry to pass over and report, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_directory(
    directory: str, options: IngestOptions, report: Callable[[Skip], None]
) -> DirectoryResult:
    """Read the files under ``directory`` in order of relative path.

    Inside a git work tree git decides which files count (tracked plus
    untracked-but-not-ignored); elsewhere a walk applies the ``.gitignore``
    files itself. Every file that is listed but not read is passed to
    ``report``, except ones whose content is read under another path.
    """
    try:
        with os.scandir(directory):
            pass
    except OSError as error:
        # The user named this directory, so failing to list it is fatal.
        shown = display_path(directory)
        raise SourceError(f"cannot read {shown}: {describe_os_error(error)}") from None
    path_filter = PathFilter(options.include, options.exclude)
    root_real = os.path.realpath(directory)
    listed = list_git_files(directory)
    if listed is None:
        named = frozenset(name for name in TOOL_DIRS if any(name in pattern for pattern in options.include))
        walk = walk_files(directory, path_filter.excludes_dir, keep_tool_dirs=named)
        listed = walk.files
        for rel_dir, error in walk.unreadable_dirs:
            report(Skip(_shown(directory, rel_dir), f"unreadable ({describe_os_error(error)})"))
        for rel_dir in walk.tool_dirs:
            report(Skip(_shown(directory, rel_dir) + "/", "a dependency or tool folder (--include it, or name it, to read it)"))
    candidates = sorted(rel for rel in listed if path_filter.accepts_file(rel))
    candidate_set = set(candidates)

    result = DirectoryResult(considered=len(candidates))
    for rel in candidates:
        shown = _shown(directory, rel)
        try:
            text, is_pdf, note = _read_entry(directory, rel, root_real, candidate_set, shown, options)
        except _Silent:
            continue
        except _Skipped as skipped:
            report(Skip(shown, skipped.reason))
            continue
        if text.strip():
            result.parts.append(Part(shown, text, "pdf" if is_pdf else "file", note))
        else:
            result.empty += 1
    return result


def _read_entry(
    directory: str,
    rel: str,
    root_real: str,
    candidates: set[str],
    shown: str,
    options: IngestOptions,
) -> tuple[str, bool, str | None]:
    """Check one listed entry without opening anything unsafe, then read and convert it."""
    full = os.path.join(directory, *rel.split("/"))
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        # Listed by git but deleted from the work tree since.
        raise _Silent from None
    except OSError as error:
        raise _Skipped(f"unreadable ({describe_os_error(error)})") from None

    is_link = stat.S_ISLNK(st.st_mode)
    if is_link:
        try:
            st = os.stat(full)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _Skipped("symlink loop") from None
            if isinstance(error, FileNotFoundError):
                raise _Skipped("broken symlink") from None
            raise _Skipped(f"unreadable ({describe_os_error(error)})") from None

    # Checked for every entry, not only links: a parent directory swapped for a
    # link after listing would otherwise lead outside just the same.
    real = os.path.realpath(full)
    if not _is_within(real, root_real):
        raise _Skipped("symlink leaves the directory")

    if is_link:
        target_rel = os.path.relpath(real, root_real).replace(os.sep, "/")
        if stat.S_ISDIR(st.st_mode) or target_rel in candidates:
            # The target's content is read under its own path already.
            raise _Silent
    if stat.S_ISDIR(st.st_mode):
        # git lists submodules and nested repositories as single entries.
        raise _Skipped("nested repository (not read)")
    if not stat.S_ISREG(st.st_mode):
        # Never opened: a FIFO would block and a device may act on being opened.
        raise _Skipped(f"not a regular file ({file_kind(st.st_mode)})")

    cap = options.max_file_bytes
    if st.st_size > cap:
        raise _Skipped(_over_cap(st.st_size, cap))
    try:
        data = read_regular_file(real, limit=cap, follow_symlinks=False)
    except NotRegularFile as error:
        raise _Skipped(f"not a regular file ({error.kind})") from None
    except OSError as error:
        raise _Skipped(f"unreadable ({describe_os_error(error)})") from None
    if len(data) > cap:  # grew after it was measured
        raise _Skipped(_over_cap(len(data), cap))

    try:
        return bytes_to_text(data, rel, shown, options)
    except Rejected as rejected:
        raise _Skipped(rejected.reason) from None


def _shown(directory: str, rel: str) -> str:
    """The directory as cited (see cited_path), then the path relative to it."""
    directory = cited_path(directory)
    if not rel:
        return display_path(directory)
    if directory in (".", "./"):
        return display_path(rel)
    stripped = directory.rstrip("/" + os.sep)
    return display_path(f"{stripped}/{rel}" if stripped else f"/{rel}")


def _is_within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _over_cap(size: int, cap: int) -> str:
    return f"over size cap ({human_size(size)} > {human_size(cap)})"
