"""A model's own decoding defaults: what its authors recommend sampling with.

Greedy decoding makes small instruct models repeat themselves until the token limit; their authors
publish the sampling they were tuned for, in the checkpoint's ``generation_config.json``. A GGUF
may carry the same as ``general.sampling.*`` keys; when it carries none, the defaults its family
publishes are written at conversion, so every converted folder has them in one place. Nothing here
imports torch or transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")
GENERATION_CONFIG = "generation_config.json"

# The generation config the family's instruct checkpoints ship (Qwen2.5 and Qwen2.5-Coder
# instruct: temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.05), by model type.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen2": {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
}

# GGUF metadata key -> generation config key
_GGUF_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.penalty_repeat": "repetition_penalty",
}


def read_defaults(model_dir: str | Path) -> dict[str, Any]:
    """The sampling keys of ``model_dir``'s generation config (``temperature`` 0 where it says
    ``do_sample: false``); empty when it has none or no config."""
    try:
        data = json.loads((Path(model_dir) / GENERATION_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    found = {key: data[key] for key in SAMPLING_KEYS if _number(data.get(key))}
    if data.get("do_sample") is False:
        found["temperature"] = 0.0
    elif "do_sample" not in data and found:
        # transformers samples only with do_sample; a config with sampling keys but no switch is greedy there
        found["temperature"] = 0.0
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def gguf_defaults(gguf_file: str | Path) -> dict[str, Any]:
    """The ``general.sampling.*`` keys a GGUF carries, as generation config keys."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    found: dict[str, Any] = {}
    for gguf_key, key in _GGUF_KEYS.items():
        field = reader.get_field(gguf_key)
        if field is not None:
            found[key] = field.contents()
    return {"do_sample": True, **found} if found else {}


def write_defaults(model_dir: str | Path, model_type: str | None, from_gguf: dict[str, Any]) -> dict[str, Any]:
    """Merge the converted model's decoding defaults into its generation config: the GGUF's own
    keys, else its family's published ones (none for a family starcli does not know). Returns what
    was written."""
    defaults = from_gguf or FAMILY_DEFAULTS.get(model_type or "", {})
    if not defaults:
        return {}
    path = Path(model_dir) / GENERATION_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data.update(defaults)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return defaults
