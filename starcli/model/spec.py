"""What the model layer hands on: a resolved model (``ModelSpec``) and the error it raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

ProgressFn = Callable[[str, int, int], None]


class ModelError(InputError):
    """A model could not be found, verified, converted or loaded; the message is for the user."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: ``path`` is a transformers folder that `load_model` can read."""

    name: str
    kind: str  # "default" | "embedded" | "directory" | "gguf" | "hub-cache"
    path: Path
    source: str | None = None  # what the user named: a path, a repo id, or an embedded model's packages
    sha256: str | None = None  # of the GGUF the entry was converted from, for "default"/"embedded"/"gguf"
