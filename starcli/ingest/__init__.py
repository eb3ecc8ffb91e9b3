"""Ingestion: turn what the user gave (files, directories, PDFs, ``-``) into a ``Document``
(``loader.load_sources``, rendered with ``Document.render``), and a document and a question into
the model's prompt (``prompt``). Every failure meant for the user is a ``SourceError`` whose
message fits on one line.

Nothing is imported here: the prompt builder (used on every rank) must not pull in the PDF and
encoding libraries that only reading sources needs.
"""
