"""Keep a document's phase-1 KV on disk, so a later question about the same input skips phase 1.

Phase 1 does not depend on the question. An entry holds one rank's document KV (safetensors,
never pickle) plus a JSON record of exactly what produced it: the model's identity, a hash of the
document token ids, attention mode, block and anchor sizes, dtype, world size and rank. An entry
is used only if every one of those matches, the tensor file's BLAKE2b digest equals the one recorded
when it was written, and its tensors have the recorded shapes; anything else (a changed file,
another model or block size, a damaged or replaced byte) is a miss, never a wrong answer.
Entries are written to a temporary directory and renamed into place; the oldest are evicted past
a size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import RunError
from .dirs import atomic_dir, file_digest, private_subdir, remove_tree

DEFAULT_LIMIT_BYTES = 20 * 1024**3
_TENSORS = "kv.safetensors"
_RECORD = "entry.json"


class DocCacheError(RunError):
    pass


@dataclass(frozen=True)
class EntryKey:
    model: str  # identity of the weights, see model_identity
    tokens_sha256: str
    num_tokens: int
    attention: str
    block_size: int
    anchor_size: int
    relay: str  # tokens of the previous block each block attended to ("0": none)
    dtype: str
    world_size: int
    rank: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


def tokens_digest(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def model_identity(model_path: str) -> str:
    """The converted model's source hash when known, else config + weight file names, sizes, mtimes."""
    path = Path(model_path)
    parts = [path.resolve().as_posix()]
    marker = path / "starcli.json"
    if marker.is_file():
        parts.append(json.loads(marker.read_text()).get("sha256", ""))
    for item in sorted(path.iterdir()):
        if item.suffix in (".json", ".safetensors", ".bin"):
            stat = item.stat()
            parts.append(f"{item.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def limit_bytes() -> int:
    """STARCLI_DOC_CACHE_MAX_BYTES, or the default; ValueError naming the variable if it is not a
    number of bytes (checked before a run, not after its encoding)."""
    value = os.environ.get("STARCLI_DOC_CACHE_MAX_BYTES")
    if not value:
        return DEFAULT_LIMIT_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"STARCLI_DOC_CACHE_MAX_BYTES must be a number of bytes, got {value!r}")
    return limit


def documents_dir() -> Path:
    return private_subdir("documents")


def load(key: EntryKey) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, record) for ``key``, or None on a miss. Raises DocCacheError on a corrupt entry."""
    entry = documents_dir() / key.digest()
    if not entry.is_dir():
        return None
    try:
        record = json.loads((entry / _RECORD).read_text())
        if record.get("key") != asdict(key):
            return None  # a digest collision or a stale format: not ours
        _check_digest(entry, record)
        from safetensors.torch import load_file

        tensors = load_file(str(entry / _TENSORS))
        for name, shape in record["shapes"].items():
            if list(tensors[name].shape) != shape:
                raise DocCacheError(f"tensor {name} has shape {list(tensors[name].shape)}, recorded {shape}")
        if set(tensors) != set(record["shapes"]):
            raise DocCacheError("the entry's tensors do not match its record")
    except DocCacheError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is corrupt
        raise DocCacheError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    os.utime(entry)  # most recently used: evicted last
    return tensors, record


def _check_digest(entry: Path, record: dict) -> None:
    """Damage that keeps the file's size and safetensors header (a flipped or overwritten byte
    inside the tensor data) loads without complaint and gives garbage, so the bytes themselves
    are compared with what was written."""
    recorded = record.get("blake2b", {}).get(_TENSORS)
    if recorded is None:
        raise DocCacheError(f"{_TENSORS} has no recorded digest (an entry from an older version)")
    if file_digest(entry / _TENSORS) != recorded:
        raise DocCacheError(f"{_TENSORS} does not match the digest recorded when it was written")


def save(key: EntryKey, tensors: dict[str, torch.Tensor], encode_seconds: float, sources: list[str] = ()) -> Path:
    from safetensors.torch import save_file

    final = documents_dir() / key.digest()
    with atomic_dir(final) as tmp:
        cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        save_file(cpu, str(tmp / _TENSORS))
        record = {
            "key": asdict(key),
            "shapes": {name: list(t.shape) for name, t in cpu.items()},
            "blake2b": {_TENSORS: file_digest(tmp / _TENSORS)},
            "bytes": sum(t.numel() * t.element_size() for t in cpu.values()),
            "encode_seconds": encode_seconds,
            "created": time.time(),
            "sources": list(sources),
        }
        (tmp / _RECORD).write_text(json.dumps(record, indent=2))
    evict(limit_bytes())
    return final


def remove(digest: str) -> None:
    remove_tree(documents_dir() / digest)


def entries() -> list[dict]:
    """Every entry, newest first: digest, size on disk, tokens, settings, last use."""
    out = []
    root = documents_dir()
    if not root.is_dir():
        return out
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
        try:
            record = json.loads((entry / _RECORD).read_text())
            key, about = record["key"], {"created": record.get("created"), "sources": record.get("sources", [])}
        except (OSError, ValueError, KeyError, TypeError):
            key, about = {}, {}
        out.append({"id": entry.name, "bytes": size, "last_used": entry.stat().st_mtime, **about, **key})
    return sorted(out, key=lambda e: e["last_used"], reverse=True)


def evict(limit: int) -> None:
    """Remove least recently used entries until the total is within ``limit`` bytes."""
    total = 0
    for entry in entries():
        total += entry["bytes"]
        if total > limit:
            remove(entry["id"])


def clear() -> int:
    found = entries()
    for entry in found:
        remove(entry["id"])
    return len(found)
