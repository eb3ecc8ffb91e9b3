"""Named model shapes for ``starcli bench`` and random model folders."""

from transformers import Gemma3TextConfig, LlamaConfig, PretrainedConfig, Qwen2Config

# Gemma 3 4B's text model: five sliding-window layers (1,024 tokens) to one global layer.
_GEMMA3_4B = dict(
    vocab_size=262208,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=1024,
    max_position_embeddings=131072,
    rms_norm_eps=1e-6,
)

# Named model shapes. Only shapes matter for speed, so weights are random; never zeros, which draw
# less power on a GPU and so time faster than real weights would.
SHAPES: dict[str, PretrainedConfig] = {
    "llama3-8b": LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
        max_position_embeddings=2 * 1024 * 1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "qwen2.5-0.5b": Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        rope_theta=1000000.0,
        max_position_embeddings=32768,  # raised per run to cover the longest bench length
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
    ),
    "gemma3-4b": Gemma3TextConfig(**_GEMMA3_4B),
    # the same with every layer global: what phase 2 would read without the windows
    "gemma3-4b-global": Gemma3TextConfig(**_GEMMA3_4B, layer_types=["full_attention"] * 34),
    "tiny": LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
}
