"""``starcli serve``: load the model once and answer over HTTP (``starcli.serve``)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from .boundary import run_command
from .options import ApiKey, Debug, DeviceOptions, Gpus, ModelOptions, Procs, StarOptions, Timeout, run_settings, uses

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """``8GiB``, ``512M``, ``1e9``-free byte counts: 1024-based units, K to T."""
    from ..errors import UsageError

    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{option} must be a size such as 8GiB or 512MiB, got {text!r}")
    unit = (match.group(2) or "B").upper()[0]
    return int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))


@uses(model=ModelOptions, device=DeviceOptions)
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; other than loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one, printed at start).")] = 8471,
    procs: Procs = None, gpus: Gpus = None, timeout: Timeout = 120.0,
    doc_memory: Annotated[str, typer.Option("--doc-memory", envvar="STARCLI_DOC_MEMORY", help="Memory for encoded documents kept between requests, per rank (least recently used dropped first).")] = "8GiB",
    api_key: ApiKey = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body, documents included.")] = "64MiB",
    max_documents: Annotated[int, typer.Option(help="Documents posted to /v1/documents kept for questions (oldest forgotten first).")] = 64,
    grace: Annotated[float, typer.Option(help="Seconds requests in flight may take to finish when the server stops (then they are cancelled).")] = 10.0,
    debug: Debug = False, *, model: ModelOptions, device: DeviceOptions,
):
    """Keep the model loaded and answer over HTTP: OpenAI's chat completions, a document API, and `starcli ask --server`."""
    def body():
        from ..app.requests import Placement
        from ..app.resident import Resident
        from ..errors import UsageError
        from ..serve.api import Limits
        from ..serve.server import check_bind, serve as run_server
        from .render import Renderer

        memory_bytes = parse_size(doc_memory, "--doc-memory")
        limits = Limits(max_body_bytes=parse_size(max_body, "--max-body"), max_documents=max_documents,
                        shutdown_grace_s=grace)
        if max_documents < 1:
            raise UsageError(f"--max-documents must be at least 1, got {max_documents}")
        if not grace >= 0:
            raise UsageError(f"--grace must not be negative, got {grace:g}")
        check_bind(host, port, api_key)
        renderer = Renderer()
        resident = Resident(run_settings(model, StarOptions(), device), Placement(procs, gpus, timeout_s=timeout),
                            memory_bytes, renderer)
        renderer.stop_progress()
        run_server(resident, host, port, api_key, limits)

    run_command(debug, body)
