"""Which keys a query sees in one layer, by absolute token position.

Every layer is causal: the query at position p sees keys j <= p. Some layers see fewer:

- a sliding window of W tokens (Mistral, Phi-3, StarCoder2, the local layers of Gemma 2/3, gpt-oss,
  Cohere2, OLMo3, Ministral): j > p - W, as transformers' masks have it (W keys, the query's own
  included);
- chunked attention of C tokens (Llama 4's local layers): j // C == p // C.

A layer may also soft-cap its scores (Gemma 2: ``cap · tanh(score / cap)``), which changes every
score and so rules out the fused kernels. The rules are plain integers, so both phases trim the
keys to those some query can see before any kernel runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerPattern:
    window: int | None = None
    chunk: int | None = None
    softcap: float | None = None

    @property
    def plain(self) -> bool:
        """Causal attention over every earlier key, unscaled: what the fused kernels compute."""
        return self.window is None and self.chunk is None and not self.softcap

    @property
    def window_only(self) -> bool:
        """Causal attention, over a sliding window or not: what the split-KV kernels compute."""
        return self.chunk is None and not self.softcap

    def first_visible(self, position: int) -> int:
        """The first key position the query at ``position`` sees; never decreases with ``position``."""
        first = 0
        if self.window is not None:
            first = max(first, position - self.window + 1)
        if self.chunk is not None:
            first = max(first, position // self.chunk * self.chunk)
        return first

    def visible(self, query_positions: torch.Tensor, key_positions: torch.Tensor, causal: bool) -> torch.Tensor | None:
        """(Sq, Sk) boolean: which key each query sees (None: all of them). Positions may live on
        the device (a captured decoding step), so nothing here reads them on the host."""
        rows, cols = query_positions[:, None], key_positions[None, :]
        seen = None

        def both(a, b):
            return b if a is None else a & b

        if causal:
            seen = both(seen, cols <= rows)
        if self.window is not None:
            seen = both(seen, cols > rows - self.window)
        if self.chunk is not None:
            seen = both(seen, torch.div(cols, self.chunk, rounding_mode="floor") == torch.div(rows, self.chunk, rounding_mode="floor"))
        return seen


PLAIN = LayerPattern()


def layer_pattern(config, layer: int, sliding_window: int | None, softcap: float | None) -> LayerPattern:
    """The pattern of ``layer``: the window and cap the model hands its attention function, and the
    chunk of a chunked layer (transformers expresses that one through the mask alone, which this
    attention function never gets)."""
    chunk = None
    layer_types = getattr(config, "layer_types", None)
    if layer_types and layer_types[layer] == "chunked_attention":
        chunk = getattr(config, "attention_chunk_size", None)
    return LayerPattern(window=sliding_window or None, chunk=chunk or None, softcap=softcap or None)
