"""``python -m starcli``: the command line."""

from .cli.main import main

main()
