"""The user's commands: parse (Typer, through the shared option groups), call ``app``, render.

Each body runs behind the one error boundary (``run_command``); the heavy libraries load inside
the bodies, so ``--help`` and ``--version`` answer without torch.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from .boundary import run_command
from .options import (AnswerOptions, AskOptions, Cache, Debug, Device, DeviceOptions, Gpus, InputOptions, JsonOut, Model,
                      ModelOptions, Nnodes, Procs, Quiet, ServerOptions, StarOptions, Timeout, Truncate, WindowLimit, run_settings, uses)


def _stdin_sources(sources: list[str]) -> list[str]:
    from ..app.ask import stdin_is_piped
    from ..errors import UsageError

    if sources:
        return sources
    if stdin_is_piped():
        return ["-"]
    raise UsageError("no input: name files or directories, or pipe text in (e.g. `git diff | starcli ask \"...\"`)")


def _stdin_bytes():
    from ..errors import InputError

    if sys.stdin is None:
        raise InputError("standard input is closed: there is nothing to read from -")
    return sys.stdin.buffer


def _run_request(options: AskOptions, sources: list[str], questions: list[str], *, cache: bool, **fields) -> None:
    """ask and summarize: one request, run and reported (in this process, or by a server)."""
    sources = _stdin_sources(sources)
    renderer = options.output.renderer()
    request = options.request(sources, questions, cache=cache, **fields)
    stdin = _stdin_bytes() if "-" in sources else None
    if options.server.server:
        from ..serve.client import ask_remote

        result = ask_remote(options.server.server, options.server.api_key, request, renderer, stdin)
    else:
        from ..app.ask import ask

        result = ask(request, renderer, stdin)
    if result:
        renderer.finish(result)


@uses(options=AskOptions)
def ask(
    args: Annotated[list[str], typer.Argument(metavar="SOURCE... QUESTION", help="Files, directories or - for stdin, then the question.", show_default=False)],
    question: Annotated[Optional[list[str]], typer.Option("--question", "-q", help="A question (repeatable); then every argument is a source.")] = None,
    truncate: Truncate = False, cache: Cache = False,
    long: Annotated[str, typer.Option("--long", help="Input longer than the window: refuse (with both sizes and the choices) or map (answer each window-sized section, then combine the answers).")] = "refuse",
    window: WindowLimit = None, debug: Debug = False, *, options: AskOptions,
):
    """Answer a question about files, a repository, a PDF or piped text."""
    def body():
        from ..errors import UsageError

        if question:
            sources, questions = list(args), list(question)
        elif not args:
            raise UsageError("missing the question (the last argument)")
        elif len(args) == 1 and args[0] != "-" and os.path.exists(args[0]):
            raise UsageError(f"missing the question: starcli ask {args[0]} \"your question\"")
        else:
            sources, questions = list(args[:-1]), [args[-1]]
        _run_request(options, sources, questions, cache=cache, truncate=truncate, window=window, long=long)

    run_command(debug, body)


@uses(defaults={"max_new_tokens": 768}, options=AskOptions)
def summarize(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, PDFs, or - for stdin.", show_default=False)] = None,
    words: Annotated[Optional[int], typer.Option(help="Rough length of the summary in words.")] = None,
    truncate: Truncate = False, cache: Cache = False, window: WindowLimit = None, debug: Debug = False, *,
    options: AskOptions,
):
    """Summarize the whole input; input longer than the window is summarized section by section, then the section summaries are combined."""
    def body():
        from ..app.longdoc import summary_question
        from ..errors import UsageError

        if words is not None and words < 1:
            raise UsageError(f"--words must be positive, got {words}")
        _run_request(options, list(sources or []), [summary_question(words)], cache=cache, truncate=truncate,
                     window=window, long="summary", words=words)

    run_command(debug, body)


@uses(model=ModelOptions, star=StarOptions, device=DeviceOptions, answer=AnswerOptions, inputs=InputOptions,
      server=ServerOptions)
def chat(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories or PDFs to talk about.", show_default=False)] = None,
    debug: Debug = False, *, model: ModelOptions, star: StarOptions, device: DeviceOptions, answer: AnswerOptions,
    inputs: InputOptions, server: ServerOptions,
):
    """Encode the input once, then answer questions interactively (follow-ups keep the conversation)."""
    def body():
        from ..app.chat import chat as run_chat
        from ..app.requests import AskRequest
        from ..errors import UsageError
        from .render import Renderer

        if not sources:
            raise UsageError("chat needs files or directories (questions are read from the terminal)")
        if sys.stdin is None:
            from ..errors import InputError

            raise InputError("standard input is closed: chat reads its questions there")
        request = AskRequest(list(sources), [], run_settings(model, star, device, answer), inputs.ingest())
        if server.server:
            from ..serve.client import chat_remote

            chat_remote(server.server, server.api_key, request, Renderer(), _read_question)
        else:
            run_chat(request, Renderer(), _read_question)

    run_command(debug, body)


def _read_question() -> str | None:
    """One line from the user, with line editing and history where the terminal has them."""
    try:
        import readline  # noqa: F401 - importing it enables editing and history for input()
    except ImportError:
        pass
    try:
        return input("> " if sys.stdin.isatty() else "")
    except EOFError:
        return None


@uses(star=StarOptions, inputs=InputOptions)
def count(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, PDFs, or - for stdin.", show_default=False)] = None,
    model: Model = None, device: Device = "auto", json_output: JsonOut = False, quiet: Quiet = False, debug: Debug = False,
    procs: Procs = None, gpus: Gpus = None, nnodes: Nnodes = 1, *, star: StarOptions, inputs: InputOptions,
):
    """Count tokens per file and in total, and show the blocks and ranks a run would use."""
    def body():
        from ..app.ask import count as run_count
        from ..app.requests import Placement
        from .render import Renderer

        settings = run_settings(ModelOptions(model=model), star, DeviceOptions(device=device))
        srcs = _stdin_sources(list(sources or []))
        renderer = Renderer(quiet=quiet)
        result = run_count(srcs, settings, inputs.ingest(), Placement(procs, gpus, nnodes), renderer,
                           _stdin_bytes() if "-" in srcs else None)
        renderer.stop_progress()
        if json_output:
            print(json.dumps(result, indent=2))
            return
        width = max([len(p["path"]) for p in result["parts"]] + [5])
        for part in result["parts"]:
            print(f"{part['path']:<{width}}  {part['tokens']:>9,}")
        print(f"{'total':<{width}}  {result['document_tokens']:>9,}  (prompt document part, model {result['model']})")
        print(
            f"{result['attention']}: {result['blocks']} block(s) of {result['block_size']}, anchor {result['anchor_size']}, "
            f"relay {result['relay']}, {result['ranks']} rank(s) {result['blocks_per_rank']}; window {result['max_positions']}"
        )
        print(result["attention_reason"])

    run_command(debug, body)


def models(json_output: JsonOut = False, debug: Debug = False):
    """List the embedded models (installed or not) and the converted models in the cache."""
    def body():
        from ..model.listing import list_models
        from .render import format_bytes

        entries = list_models()
        if json_output:
            print(json.dumps(entries, indent=2, default=str))
            return
        for entry in entries:
            size = entry.get("size_bytes")
            status = entry.get("status", "")
            if status == "not installed" and entry.get("install"):
                status = f"not installed ({entry['install']})"
            fields = (entry.get("name"), entry.get("kind"), status, format_bytes(size) if size else "",
                      entry.get("path", "") if entry.get("converted") else entry.get("about", ""))
            print("  ".join(str(x) for x in fields if x != ""))

    run_command(debug, body)


cache_app = typer.Typer(help="The document cache kept by --cache: list, remove, clear.", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(json_output: JsonOut = False, debug: Debug = False):
    """List cached documents, most recently used first."""
    def body():
        from ..cache import documents
        from .render import format_bytes

        found = documents.entries()
        if json_output:
            print(json.dumps(found, indent=2))
            return
        for e in found:
            print(f"{e['id']}  {_when(e.get('created'))}  {format_bytes(e['bytes']):>10}  {e.get('num_tokens', '?'):>8} tokens  "
                  f"{e.get('attention', '?')} b={e.get('block_size', '?')} a={e.get('anchor_size', '?')} r={e.get('relay', '?')} "
                  f"rank {e.get('rank', '?')}/{e.get('world_size', '?')}  {_sources(e.get('sources'))}")
        total = sum(e["bytes"] for e in found)
        print(f"{len(found)} entries, {format_bytes(total)} in {documents.documents_dir()}", file=sys.stderr)

    run_command(debug, body)


def _when(created: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "????-??-?? ??:??"


def _sources(sources: list[str] | None) -> str:
    """The first source and how many more; entries from older versions recorded none."""
    if not sources:
        return "(source not recorded)"
    return sources[0] + (f" (+{len(sources) - 1} more)" if len(sources) > 1 else "")


@cache_app.command("rm")
def cache_rm(ids: Annotated[list[str], typer.Argument(help="Entry ids from `starcli cache ls`.")], debug: Debug = False):
    """Remove cached documents."""
    def body():
        from ..cache import documents
        from ..errors import InputError

        known = {e["id"] for e in documents.entries()}
        for entry_id in ids:
            if entry_id not in known:
                raise InputError(f"no cache entry {entry_id!r} (see `starcli cache ls`)")
            documents.remove(entry_id)
            print(f"removed {entry_id}", file=sys.stderr)

    run_command(debug, body)


@cache_app.command("clear")
def cache_clear(debug: Debug = False):
    """Remove every cached document."""
    def body():
        from ..cache import documents

        print(f"removed {documents.clear()} entries", file=sys.stderr)

    run_command(debug, body)


def worker(
    job: Annotated[str, typer.Option(help="Job file (token ids and settings, JSON) as the launcher of `starcli ask --procs N` or `--gpus N` writes it for each rank.")],
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cuda",
    events: Annotated[Optional[str], typer.Option(help="HOST:PORT to stream events to (set by the launcher).")] = None,
    timeout: Timeout = 120.0,
):
    """Run one rank of a job (for clusters that start ranks themselves with torchrun's variables set)."""
    from ..run.worker import run_and_exit
    from .render import Renderer

    run_and_exit(["--job", job, "--device", device, "--timeout", str(timeout)] + (["--events", events] if events else []),
                 renderer=Renderer)

