"""Ask git which files of a directory belong to the project."""

from __future__ import annotations

import os
import subprocess

# Listing even a large repository takes well under this; the bound only keeps
# a wedged git (a stale lock on a network filesystem) from hanging the CLI.
_GIT_TIMEOUT_S = 120

# Repository settings can make git run programs of the repository's choosing;
# a file-system monitor is one such hook and is of no use for a one-off listing.
_SAFE_CONFIG = ("-c", "core.fsmonitor=false")


def list_git_files(directory: str) -> list[str] | None:
    """Files under ``directory`` that git tracks or would track, or ``None`` outside git.

    The list holds tracked files plus untracked files that no ignore rule
    covers, relative to ``directory`` with ``/`` separators, in git's order.
    ``None`` means git is missing, ``directory`` is not in a work tree, is
    itself ignored, or git refused (for instance a repository owned by another
    user); the caller then walks the directory itself.
    """
    if _git(directory, "rev-parse", "--show-toplevel") is None:
        return None
    if _git(directory, "check-ignore", "-q", "--", ".") is not None:
        # The user named an ignored directory (build output, a vendored
        # tree) on purpose; git would list nothing, so walk it instead.
        return None
    out = _git(directory, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    if out is None:
        return None
    paths = []
    for raw in out.split(b"\0"):
        if raw:
            # A trailing slash marks a nested repository that git lists as a unit.
            paths.append(os.fsdecode(raw).rstrip("/"))
    # Files with unmerged changes appear once per conflict stage.
    return list(dict.fromkeys(paths))


def _git(directory: str, *args: str) -> bytes | None:
    """Run a read-only git command in ``directory``; its stdout, or ``None`` on any failure."""
    try:
        result = subprocess.run(
            ["git", *_SAFE_CONFIG, "-C", directory, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_git_env(),
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _git_env() -> dict[str, str]:
    """The caller's environment minus variables that would point git elsewhere.

    With these set (as inside a git hook) git would answer about that other
    repository instead of the directory the user gave. Optional locks are
    turned off so the listing never writes to the repository.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")
    }
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env
