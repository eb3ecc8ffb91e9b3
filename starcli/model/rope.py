"""``--rope-scaling TYPE:FACTOR``: run a RoPE model past its trained length (YaRN or linear).

Star Attention does not extend a model's position range: every document token still gets its
global position. A rotary-embedding model can be stretched to ``factor`` times its trained window
by rescaling the rotary frequencies in its config, which transformers applies when it builds the
model. Accuracy degrades, more with larger factors and most with linear scaling, because the
model was not trained on those positions; it is opt-in for that reason.

Only static scalings are offered: dynamic NTK scaling recomputes the frequencies from the longest
position in each forward call, and the engine encodes a document in several calls (blocks, then
one token at a time), which would give the same position different rotations.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

SUPPORTED = ("yarn", "linear")
# ``--rope-scaling none``: never stretch, refuse inputs over the trained window as before.
NONE = "none"
# The largest YaRN factor a model family's authors document, by transformers' model type: Qwen2
# and Qwen2.5 (the embedded default model's family) recommend YaRN with factor 4 past their 32K.
YARN_FAMILIES = {"qwen2": 4.0}
# Automatic factors are rounded up to this step, so documents of similar length share one
# stretched model (and one document-cache key).
_FACTOR_STEP = 0.25


class RopeScalingError(UsageError):
    """A one-line reason the scaling cannot be used."""


@dataclass(frozen=True)
class RopeScaling:
    kind: str
    factor: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.factor:g}"


# Far past any factor a model stays useful at (published YaRN factors go to 32); larger ones only
# overflow the position arithmetic.
MAX_FACTOR = 256.0


def parse_rope_scaling(spec: str) -> RopeScaling:
    """``yarn:4`` → RopeScaling("yarn", 4.0)."""
    kind, _, factor_text = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in SUPPORTED:
        raise RopeScalingError(f"--rope-scaling must be TYPE:FACTOR with TYPE one of {', '.join(SUPPORTED)} (e.g. yarn:4), got {spec!r}")
    try:
        factor = float(factor_text)
    except ValueError:
        raise RopeScalingError(f"--rope-scaling {spec!r}: the factor must be a number, e.g. {kind}:4") from None
    if not 1.0 < factor <= MAX_FACTOR:
        raise RopeScalingError(f"--rope-scaling {spec!r}: the factor must be a number above 1 and at most {MAX_FACTOR:g}")
    return RopeScaling(kind, factor)


def unsupported_reason(config) -> str | None:
    """None when ``config`` (a transformers config) can take a RoPE scaling, else why not."""
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or not params or not getattr(config, "max_position_embeddings", None):
        return f"model type {getattr(config, 'model_type', '?')!r} has no rotary position embeddings to scale"
    if "rope_type" not in params:
        return "models with a different rotary embedding per layer type are not supported"
    if params["rope_type"] != "default":
        return f"the model already uses {params['rope_type']!r} RoPE scaling"
    return None


def apply_rope_scaling(config, scaling: RopeScaling) -> None:
    """Rescale ``config``'s rotary embedding in place and widen its window to match."""
    reason = unsupported_reason(config)
    if reason:
        raise RopeScalingError(f"--rope-scaling {scaling}: {reason}")
    trained = int(config.max_position_embeddings)
    params = dict(config.rope_parameters, rope_type=scaling.kind, factor=scaling.factor)
    if scaling.kind == "yarn":
        # YaRN interpolates between the trained window and the stretched one; it needs the former
        params["original_max_position_embeddings"] = trained
    config.rope_parameters = params
    config.max_position_embeddings = scaled_positions(trained, scaling)


def scaled_positions(trained: int, scaling: RopeScaling | None) -> int:
    return int(trained * scaling.factor) if scaling else trained


def fitting_factor(needed: int, trained: int, most: float) -> float | None:
    """The smallest YaRN factor (in steps of 0.25, above 1) whose window holds ``needed`` positions,
    at most ``most``; ``most`` itself when even that is too small (the input is then read in
    passes or refused over the stretched window); None when ``needed`` fits unstretched."""
    if needed <= trained:
        return None
    steps = -(-needed * 4 // trained)  # ceil(needed / trained / 0.25)
    return min(most, max(steps * _FACTOR_STEP, 1.0 + _FACTOR_STEP))
