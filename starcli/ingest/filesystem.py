"""Careful file access: classify before opening, never block, never follow surprises."""

from __future__ import annotations

import errno
import os
import stat

# O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
# writer, which closes the gap between checking a path and opening it.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class NotRegularFile(OSError):
    """The path turned out not to be a regular file; ``kind`` names what it is."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"))


def file_kind(mode: int) -> str:
    """Name the type of a non-regular file for messages, e.g. ``FIFO``."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def read_regular_file(path: str, limit: int | None = None, follow_symlinks: bool = True) -> bytes:
    """Read a regular file's bytes, at most ``limit + 1`` of them when a limit is set.

    The caller has already checked the path with ``stat``; the type is checked
    again on the open descriptor because the path may have been swapped in the
    meantime. Reading one byte past the limit lets the caller notice a file
    that grew beyond it after being measured.
    """
    flags = _OPEN_FLAGS | (0 if follow_symlinks else _NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(file_kind(st.st_mode))
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1  # now owned by the file object
            return handle.read(-1 if limit is None else limit + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def describe_os_error(error: OSError) -> str:
    """A short lower-case description of an OS error, e.g. ``permission denied``."""
    if isinstance(error, NotRegularFile):
        return str(error)
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return str(error) or type(error).__name__
