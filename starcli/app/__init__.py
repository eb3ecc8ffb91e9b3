"""What a command does, above the engine: requests, input policies (window, long input), no torch at import."""
