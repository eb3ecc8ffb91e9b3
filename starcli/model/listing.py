"""``starcli models``: the embedded default model's state and every converted model in the cache."""

from __future__ import annotations

from typing import Any

from ..cache.dirs import TMP_PREFIX
from . import resolve


def list_models() -> list[dict[str, Any]]:
    """The default model's state, then every entry of the conversion cache, for `starcli models`.

    Each dict has ``name``, ``kind``, ``path``, ``status`` (a word for humans: converted,
    not converted, not installed, incomplete), ``converted`` (a complete conversion is cached)
    and ``size_bytes`` (on disk; 0 if not converted); the default also has ``installed`` (its
    packages are present) and ``source_bytes``; cached conversions have ``source`` and
    ``sha256``. Entries without a marker are listed as ``kind="incomplete"``: they are rebuilt
    the next time their model is resolved.
    """
    models = resolve.models_dir()
    default_entry = models / resolve.DEFAULT_MODEL_NAME
    try:
        resolve.default_part_paths()
        installed = True
    except resolve.ModelError:
        installed = False
    default_marker = resolve.usable(default_entry, resolve.DEFAULT_GGUF_SHA256)
    rows: list[dict[str, Any]] = [
        {
            "name": resolve.DEFAULT_MODEL_NAME,
            "kind": "default",
            "default": True,
            "installed": installed,
            "source_bytes": resolve.DEFAULT_GGUF_BYTES,
            "converted": default_marker is not None,
            "status": "converted" if default_marker else ("not converted" if installed else "not installed"),
            "path": str(default_entry),
            "size_bytes": resolve.tree_size(default_entry) if default_marker else 0,
        }
    ]
    if not models.is_dir():
        return rows
    for entry in sorted(models.iterdir()):
        if entry.name.startswith(TMP_PREFIX) or entry.name == resolve.DEFAULT_MODEL_NAME or not entry.is_dir():
            continue
        marker = resolve.read_marker(entry)
        if marker is None:
            rows.append(
                {
                    "name": entry.name,
                    "kind": "incomplete",
                    "status": "incomplete",
                    "converted": False,
                    "path": str(entry),
                    "size_bytes": resolve.tree_size(entry),
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
                "size_bytes": resolve.tree_size(entry),
            }
        )
    return rows
