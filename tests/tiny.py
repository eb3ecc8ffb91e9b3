"""Tiny random transformers models for CPU tests, built from configs (no downloads)."""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from starcli.star import attention

VOCAB = 256


def tiny_config(family: str = "qwen2"):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        # wide random weights give decisive logits, so greedy tokens do not hinge on float rounding
        initializer_range=0.3,
    )
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    raise ValueError(family)


def tiny_pair(family: str = "qwen2", seed: int = 0, dtype=torch.float32):
    """(reference model with eager attention, the same weights loaded with star attention)."""
    attention.register()
    config = tiny_config(family)
    torch.manual_seed(seed)
    reference = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="eager", dtype=dtype).eval()
    star = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="star", dtype=dtype).eval()
    star.load_state_dict(reference.state_dict())
    return reference, star


def random_ids(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n,), generator=gen)
