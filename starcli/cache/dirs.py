"""Where starcli keeps its cache, and how entries get into it without ever being half-written.

Every cache entry is built in a private temporary directory beside its final place and then
renamed into place in one step, so a reader sees either no entry or a complete one: an
interrupted run, or two first runs racing each other, can never leave a truncated model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TMP_PREFIX",
    "atomic_dir",
    "cache_root",
    "file_digest",
    "file_lock",
    "remove_tree",
    "sweep_stale_tmp",
    "write_json_atomic",
]

# Temporary build directories start with this, so listings can skip them and a later run can
# clean up the ones a killed process left behind.
TMP_PREFIX = ".tmp-"

_MODE = 0o700


def cache_root() -> Path:
    """The cache directory: $STARCLI_CACHE, else $XDG_CACHE_HOME/starcli, else ~/.cache/starcli.

    Created on first use and kept private (mode 0700): it holds converted model weights and
    whatever the documents the user asked about leave behind, which other users of the machine
    have no business reading.
    """
    env = os.environ.get("STARCLI_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        root = base / "starcli"
    root.mkdir(mode=_MODE, parents=True, exist_ok=True)
    _make_private(root)
    return root


def _make_private(path: Path) -> None:
    # mkdir's mode is filtered by the umask and ignored for a directory that already exists, so
    # the permissions are checked and tightened afterwards. Only a directory we own is changed:
    # pointing STARCLI_CACHE at someone else's directory must not try to take it over.
    try:
        st = path.stat()
        if st.st_mode & 0o077 and (not hasattr(os, "geteuid") or st.st_uid == os.geteuid()):
            os.chmod(path, _MODE)
    except OSError:
        pass


def private_subdir(name: str) -> Path:
    """``cache_root() / name``, created with the root's private mode (0700)."""
    path = cache_root() / name
    path.mkdir(mode=_MODE, exist_ok=True)
    _make_private(path)
    return path


# Read in pieces so that hashing a multi-gigabyte KV file does not hold it in memory twice.
_DIGEST_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """BLAKE2b (256-bit) of the file's bytes, read in chunks."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while chunk := fh.read(_DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    """Remove a directory tree; a tree that is already gone is fine."""
    # Renaming away first makes the removal atomic for readers: nobody can observe a
    # half-deleted entry under its real name.
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f"{TMP_PREFIX}{path.name}.del-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory in a temporary place and move it to ``final`` in one rename.

    Yields the temporary directory (on the same filesystem as ``final``, so the rename is
    atomic). On success it becomes ``final``. If another process put a ``final`` in place
    first, ours is discarded and theirs is kept: both were built from the same source, and
    keeping the first one means a reader that already opened it is never disturbed. On an
    exception the temporary directory is removed and nothing appears at ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, final)
    except OSError:
        # POSIX rename refuses to replace a non-empty directory, which is exactly the "someone
        # else finished first" case; anything else is a real error.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    else:
        # mkdtemp already made it 0700; keep the entry readable only by its owner either way.
        _make_private(final)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the block.

    ``path`` may be a directory (locked in place, so no lock file is left behind) or a file
    (created if needed). ``on_wait`` is called once if the lock is busy, before blocking, so a
    caller can tell the user why nothing seems to happen.

    Not needed for correctness (``atomic_dir`` already is), but it stops two first runs from
    both spending minutes and gigabytes of memory on the same conversion: the second waits and
    then finds the first one's result. Where advisory locks do not exist it does nothing.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back on atomic_dir alone
        yield
        return
    path = Path(path)
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without locks (some network mounts): atomic_dir still protects
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sweep_stale_tmp(parent: Path, max_age_s: float = 24 * 3600) -> None:
    """Remove temporary build directories that a killed process left in ``parent``.

    Only old ones are touched, so a build still running in another process is left alone.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return
    now = time.time()
    for entry in parent.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            if now - entry.stat().st_mtime < max_age_s:
                continue
        except OSError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
