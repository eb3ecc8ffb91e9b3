"""Tiny random transformers models for CPU tests, built from configs (no downloads)."""

from __future__ import annotations

import copy
from pathlib import Path

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


def write_tiny_qwen2_gguf(path: Path) -> Path:
    """A valid two-layer qwen2 GGUF with a byte-level BPE vocabulary and Q8_0 matrices."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    hidden, layers, heads, kv_heads, ffn = 64, 2, 4, 2, 128
    head_dim = hidden // heads
    # The GPT-2 byte-to-unicode alphabet, so every byte has a token, then a few merges and the
    # special tokens a qwen2 tokenizer expects.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    tokens = [chr(c) for c in chars] + ["Ġt", "he", "Ġthe", "in"]
    merges = ["Ġ t", "h e", "Ġt he", "i n"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * len(tokens) + [3] * len(specials)
    tokens += specials
    vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab - 3)
    w.add_eos_token_id(vocab - 1)
    w.add_pad_token_id(vocab - 3)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def tensor(name: str, *shape: int, quantize: bool = False) -> None:
        data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if quantize:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)

    tensor("token_embd.weight", vocab, hidden)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", hidden)
        tensor(f"blk.{i}.ffn_norm.weight", hidden)
        tensor(f"blk.{i}.attn_q.weight", hidden, hidden, quantize=True)
        tensor(f"blk.{i}.attn_q.bias", hidden)
        tensor(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden, quantize=True)
        tensor(f"blk.{i}.attn_k.bias", kv_heads * head_dim)
        tensor(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden, quantize=True)
        tensor(f"blk.{i}.attn_v.bias", kv_heads * head_dim)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden, quantize=True)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden, quantize=True)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden, quantize=True)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn, quantize=True)
    tensor("output_norm.weight", hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def fake_default_parts(root: Path, blob: bytes, monkeypatch, *, sha256: str | None = None) -> None:
    """Install six importable packages carrying ``blob`` in chunks, and point the default at them."""
    import dataclasses
    import hashlib

    from starcli.model import embedded

    names = []
    step = -(-len(blob) // 6)
    for i in range(1, 7):
        name = f"starcli_testparts_{root.name.replace('-', '_')}_{i}"
        pkg = root / name
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('the part packages must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob[(i - 1) * step : i * step])
        names.append(name)
    monkeypatch.syspath_prepend(str(root))
    stand_in = dataclasses.replace(embedded.DEFAULT, packages=tuple(names), gguf_bytes=len(blob),
                                   sha256=sha256 or hashlib.sha256(blob).hexdigest())
    monkeypatch.setattr(embedded, "DEFAULT", stand_in)


# Families for the model-family matrix (tests/test_families.py): a model type and what differs
# from ``FAMILY_COMMON``. Windows (96) and chunks (128) are shorter than the test's document, so
# they change the answer wherever they are ignored.
WINDOW = 96
FAMILY_COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.3,
    pad_token_id=0, bos_token_id=None, eos_token_id=None,
)
_MLA = dict(kv_lora_rank=32, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=16, num_key_value_heads=4)
_MOE = dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1, n_shared_experts=1)
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("llama", {}),
    "qwen2": ("qwen2", {}),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),
    "qwen3": ("qwen3", {}),
    "qwen3-moe": ("qwen3_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)),
    "mistral-window": ("mistral", dict(sliding_window=WINDOW)),
    "mixtral-window": ("mixtral", dict(sliding_window=WINDOW, num_local_experts=4, num_experts_per_tok=2)),
    "ministral": ("ministral", dict(sliding_window=WINDOW, head_dim=16)),
    "phi3-window": ("phi3", dict(sliding_window=WINDOW)),
    "starcoder2-window": ("starcoder2", dict(sliding_window=WINDOW)),
    "gemma": ("gemma", {}),
    "gemma2": ("gemma2", dict(sliding_window=WINDOW, head_dim=16)),
    "gemma2-capped": ("gemma2", dict(sliding_window=WINDOW, head_dim=16, attn_logit_softcapping=1.0)),
    "gemma3": ("gemma3_text", dict(sliding_window=WINDOW, head_dim=16,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    "gpt-oss": ("gpt_oss", dict(sliding_window=WINDOW, num_local_experts=4, num_experts_per_tok=2, head_dim=16)),
    "cohere": ("cohere", {}),
    "cohere2": ("cohere2", dict(sliding_window=WINDOW)),
    "olmo2": ("olmo2", {}),
    "olmo3": ("olmo3", dict(sliding_window=WINDOW)),
    "exaone4": ("exaone4", dict(sliding_window=WINDOW, sliding_window_pattern=2)),
    "llama4": ("llama4_text", dict(attention_chunk_size=128, num_local_experts=2, intermediate_size_mlp=128,
                                   layer_types=["chunked_attention", "chunked_attention", "full_attention"],
                                   no_rope_layers=[1, 1, 0])),
    "deepseek-v2": ("deepseek_v2", dict(_MLA, q_lora_rank=None, **_MOE)),
    "deepseek-v3": ("deepseek_v3", dict(_MLA, **_MOE, n_group=1, topk_group=1, head_dim=8)),
    "minicpm3": ("minicpm3", _MLA),
    "glm4-moe-lite": ("glm4_moe_lite", dict(_MLA, **_MOE, n_group=1, topk_group=1)),
    "phi": ("phi", {}),
    "granite": ("granite", {}),
    "gpt-neox": ("gpt_neox", {}),
    "smollm3": ("smollm3", {}),
    "glm": ("glm", {}),
    "gpt2": ("gpt2", dict(n_embd=64, n_layer=3, n_head=4)),
    # refused: what the engine cannot represent
    "diffllama": ("diffllama", {}),
    "recurrent-gemma": ("recurrent_gemma", {}),
    "nemotron": ("nemotron", {}),
    "falcon": ("falcon", {}),
    "gptj": ("gptj", {}),
    "gpt-neo": ("gpt_neo", dict(num_layers=3, attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=WINDOW)),
    "codegen": ("codegen", dict(n_embd=64, n_layer=3, n_head=4, rotary_dim=8)),
    "stablelm": ("stablelm", {}),
    "bloom": ("bloom", {}),
    "mpt": ("mpt", {}),
    "qwen3-next": ("qwen3_next", {}),
    "jamba": ("jamba", {}),
}


def family_config(name: str):
    """A small config of the family's own config class."""
    from transformers import AutoConfig

    model_type, overrides = FAMILIES[name]
    return AutoConfig.for_model(model_type, **{**FAMILY_COMMON, **overrides})


def family_pair(name: str, dtype=torch.float32):
    """(transformers' eager model, the same weights with star attention) of a family."""
    attention.register()
    config = family_config(name)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="eager", dtype=dtype).eval()
    star = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="star", dtype=dtype).eval()
    star.load_state_dict(reference.state_dict())
    return reference, star
