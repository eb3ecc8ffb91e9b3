"""The command line: the only Typer code."""
