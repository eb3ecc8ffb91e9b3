"""Ingestion: turn what the user gave (files, directories, PDFs, ``-``) into a Document.

The CLI calls :func:`load_sources` and renders the result with
:meth:`Document.render`; every failure meant for the user is a
:class:`SourceError` whose message fits on one line.
"""

from .document import Document, Part, Skip
from .errors import SourceError
from .loader import load_sources
from .options import IngestOptions

__all__ = ["Document", "IngestOptions", "Part", "Skip", "SourceError", "load_sources"]
