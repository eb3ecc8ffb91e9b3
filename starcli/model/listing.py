"""``starcli models``: the embedded models' state and every converted model in the cache."""

from __future__ import annotations

from typing import Any

from ..cache.dirs import TMP_PREFIX
from . import embedded, resolve


def list_models() -> list[dict[str, Any]]:
    """The embedded models' state (the default first), then every other entry of the conversion
    cache, for `starcli models`.

    Each dict has ``name``, ``kind``, ``path``, ``status`` (a word for humans: converted,
    not converted, not installed, incomplete), ``converted`` (a complete conversion is cached)
    and ``size_bytes`` (on disk; 0 if not converted); embedded models also have ``installed`` (their
    packages are present), ``source_bytes``, ``install`` and ``about``; cached conversions have ``source`` and
    ``sha256``. Entries without a marker are listed as ``kind="incomplete"``: they are rebuilt
    the next time their model is resolved.
    """
    models = resolve.models_dir()
    rows: list[dict[str, Any]] = [_embedded_row(model, models / model.name) for model in embedded.embedded_models()]
    shipped = {model.name for model in embedded.embedded_models()}
    if not models.is_dir():
        return rows
    for entry in sorted(models.iterdir()):
        if entry.name.startswith(TMP_PREFIX) or entry.name in shipped or not entry.is_dir():
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


def _embedded_row(model: embedded.EmbeddedModel, entry) -> dict[str, Any]:
    try:
        embedded.part_paths(model)
        installed = True
    except resolve.ModelError:
        installed = False
    marker = resolve.usable(entry, model.sha256)
    return {
        "name": model.name,
        "kind": "default" if model is embedded.DEFAULT else "embedded",
        "default": model is embedded.DEFAULT,
        "aliases": list(model.aliases),
        "about": model.about,
        "install": model.install,
        "installed": installed,
        "source_bytes": model.gguf_bytes,
        "converted": marker is not None,
        "status": "converted" if marker else ("not converted" if installed else "not installed"),
        "path": str(entry),
        "size_bytes": resolve.tree_size(entry) if marker else 0,
    }
