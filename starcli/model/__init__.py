"""Models: resolving --model, the embedded default, GGUF conversion, loading, dtypes, RoPE scaling."""
