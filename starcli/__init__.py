"""starcli: ask questions about, and summarize, documents far longer than one GPU handles."""

__version__ = "0.1.0"
