"""The accuracy suite behind ``starcli eval``: synthetic long-context tasks (``tasks``), a JSONL
reader (``data``), option values (``options``), a runner that compares attention modes on the same
prompts through one session (``runner``), and the command as a whole (``command``)."""
