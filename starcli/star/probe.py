"""What a model does with its attention, found by running it on a few tokens.

The engine can drive a model whose every layer calls the registered attention function exactly
once per forward pass with that layer's own queries, keys and values: that is what it keeps KV for
and splits across blocks and ranks. Names and config fields do not say so reliably (a family may
call attention twice per layer, skip it in recurrent or state-space layers, or not hand the
engine's state through), so the model is run once on a few tokens with a recording state, before
any document, and refused with the reason when it does anything else.
"""

from __future__ import annotations

import torch

from .attention import LayerShape

PROBE_TOKENS = 4
# Layer types (``config.layer_types``) the engine runs: softmax attention, over every earlier token
# or within a window or chunk (masks.LayerPattern).
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


def config_refusal(config, model_class) -> str | None:
    """What the config and model class alone show the engine cannot run (None: nothing), so that
    such a model is refused before its weights are read."""
    family = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return f"model type {family!r} is an encoder-decoder model; starcli runs decoder-only causal models"
    layer_types = getattr(config, "layer_types", None) or ()
    other = sorted(set(layer_types) - set(ATTENTION_LAYER_TYPES))
    if other:
        return (f"model type {family!r} has {other[0].replace('_', ' ')} layers, which are not softmax "
                "attention: their state cannot be split into blocks")
    if not getattr(model_class, "_supports_attention_backend", False):
        return (f"model type {family!r} computes attention inside its own layers (no attention interface), "
                "so its attention cannot be split into blocks")
    return None


class _Recorder:
    """Stands in for ``AttentionState``: notes each call and answers zeros of the right shape."""

    def __init__(self):
        self.calls: list[int] = []
        self.shapes: dict[int, LayerShape] = {}

    def attend(self, layer, q, k, v, scale, pattern=None, sinks=None):
        self.calls.append(layer)
        self.shapes[layer] = LayerShape(k.shape[1], k.shape[-1], v.shape[-1])
        return q.new_zeros(*q.shape[:3], v.shape[-1])


def probe_attention(model) -> tuple[dict[int, LayerShape], str | None]:
    """(each layer's KV shape, None) when every layer attends once through the engine, else
    ({}, the reason it cannot be driven)."""
    config = model.config
    family = config.model_type
    device = next(model.parameters()).device
    recorder = _Recorder()
    ids = torch.arange(PROBE_TOKENS, device=device) % config.vocab_size
    try:
        with torch.inference_mode():
            model.base_model(input_ids=ids[None], position_ids=torch.arange(PROBE_TOKENS, device=device)[None],
                             use_cache=False, star_state=recorder)
    except RuntimeError as exc:
        if "star_state keyword missing" in str(exc):
            return {}, f"model type {family!r} does not hand the engine's state to its attention layers"
        raise
    layers = config.num_hidden_layers
    twice = sorted({layer for layer in recorder.calls if recorder.calls.count(layer) > 1})
    if twice:
        return {}, (f"model type {family!r} calls attention more than once in a layer (layer {twice[0]}): "
                    "its second call cannot reuse the first one's cache")
    missing = layers - len(recorder.shapes)
    if missing > 0:
        return {}, (f"model type {family!r} has {missing} of {layers} layers without softmax attention "
                    "(recurrent, state-space or linear): their state cannot be split into blocks")
    if any(not 0 <= layer < layers for layer in recorder.shapes):
        return {}, f"model type {family!r} numbers its attention layers beyond its {layers} layers"
    return recorder.shapes, None
