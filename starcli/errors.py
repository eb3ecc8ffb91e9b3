"""Every failure meant for the user: one line of text and the exit status that goes with it.

Each layer raises the subclass that says whose fault it is; the command line's one boundary
(``starcli.cli.boundary``) prints ``starcli: error: <message>`` and exits with ``code``. Anything
that is not a ``StarcliError`` is a defect of starcli, shown the same way with its type named.
"""

from __future__ import annotations


class StarcliError(Exception):
    """A one-line message for the user; ``code`` is the exit status (1 unless a subclass says)."""

    code = 1

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(StarcliError, ValueError):
    """A bad option, argument or environment variable: exit 2, before any work starts."""

    code = 2


class InputError(StarcliError):
    """Input that cannot be used: a source, a model folder, a data file (exit 1)."""


class RunError(StarcliError, RuntimeError):
    """The run itself failed: a rank, a collective, the engine, the disk (exit 1)."""


class Cancelled(RunError):
    """The run was stopped on purpose (a server's client went away, or the server is stopping)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """One line of an exception, naming its type, for messages that must stay one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
