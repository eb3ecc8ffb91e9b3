"""A decoder's sizes read from its config: what FLOP counts (``tools.bench``) and memory estimates
(the engine's pass size) are computed from. Plain integers, no model."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class ModelDims:
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "ModelDims":
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            q_heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
        )

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' matmuls, counted from the config (not from a model).

        Per layer: q and o projections hidden·Hq·d each, k and v hidden·Hkv·d each, and a gated MLP
        of three hidden·intermediate matrices. Norms and biases are left out (additions, not
        multiply-adds), and so are the embedding and LM head: the engine never computes logits for
        document tokens.
        """
        attn = self.hidden * self.head_dim * (2 * self.q_heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    def attention_flops(self, score_entries: int) -> int:
        """QKᵀ and PV: 2·d multiply-adds each per (query, key) entry, for every query head and layer."""
        return 4 * self.layers * self.q_heads * self.head_dim * score_entries

    @property
    def activation_per_token(self) -> int:
        """Elements live at once per token inside one layer of a forward without gradients: the
        residual stream and its normed copy, q/k/v and the attention output, and the MLP's gate,
        up and product. Rough (17.5 GiB for the Llama-3.1-8B shape at 128K, where transformers'
        forward measured 14.6 above its weights); callers keep a margin."""
        return 4 * self.hidden + 2 * (self.q_heads + 2 * self.kv_heads) * self.head_dim + 3 * self.intermediate
