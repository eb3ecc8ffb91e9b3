"""Errors raised while turning the user's inputs into a document."""

from __future__ import annotations

from ..errors import InputError


class SourceError(InputError):
    """One-line user-facing message; the CLI prints it and exits 1."""


class Rejected(SourceError):
    """A file whose content cannot be used, with a short reason for the skip list.

    The same problem is fatal when the user named the file explicitly (they
    asked for it, so silently dropping it would mislead) and a mere skip when
    the file was found while walking a directory. Carrying both the full
    message and the short reason lets each caller pick the right form.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
