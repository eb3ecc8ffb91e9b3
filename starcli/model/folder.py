"""What a transformers model folder must hold before anything from it is loaded: a readable
``config.json``, weights in safetensors (pickles only when allowed), and a vocabulary file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import one_line
from .spec import ModelError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_model_dir(path: Path, *, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f"; to use the GGUF file, name it: {ggufs[0]}" if len(ggufs) == 1 else ""
        raise ModelError(f"{path} is not a model directory (no config.json){hint}")
    read_config(path)
    if any(path.glob("*.safetensors")):
        return
    if any(f.suffix in _PICKLE_SUFFIXES for f in path.iterdir() if f.is_file()):
        if allow_pickle:
            return
        # Pickle files can run arbitrary code when unpickled; safetensors cannot. Loading them
        # is an explicit choice, and even then only with torch's restricted `weights_only`.
        raise ModelError(
            f"{path} has only pickle weights; pass --allow-pickle to load them with weights_only"
        )
    raise ModelError(f"{path} has no model weights (*.safetensors)")


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'} is unreadable: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path / 'config.json'} is not a JSON object")
    return data
