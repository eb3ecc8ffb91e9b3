"""The starcli command line. Commands parse options, call ``app``, and render; nothing else.

Only the standard library and the option parser load at startup: ``app`` and everything under it
(torch, transformers) load inside the command that needs them, so ``--version`` and ``--help``
answer at once and a Ctrl-C while the heavy libraries load is one line, not a traceback.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    # While this module loads, Ctrl-C would raise inside whatever is being imported and end in a
    # traceback; there is nothing to clean up yet, so leave at once.
    print("\nstarcli: interrupted", file=sys.stderr)
    os._exit(130)


# restored at the end of this module, so importing it (tests, the usage generator) changes nothing
_sigint_before_import = signal.signal(signal.SIGINT, _interrupted_while_starting)

import importlib  # noqa: E402 - the handler above must be in place before any import that takes time
import json  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402
# typer carries its own copy of click; its usage errors are these classes
from typer._click import Command, Context, HelpFormatter  # noqa: E402
from typer._click.core import Parameter, ParameterSource  # noqa: E402
from typer._click.exceptions import BadParameter, UsageError  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from .. import __version__  # noqa: E402

# Commands that live in modules of their own and load torch when imported: registered by name,
# loaded only when run (or documented), so listing them in --help loads nothing.
_LAZY_COMMANDS = {
    "bench": ("..tools.bench", "bench_command", "Speed benchmark of the engine on random-weight model shapes."),
    "eval": ("..tools.evals.cli", "eval_command", "Accuracy suite: synthetic long-context tasks under each attention mode."),
}


class _Commands(TyperGroup):
    """The top-level group, with the lazily loaded commands of ``_LAZY_COMMANDS``."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *_LAZY_COMMANDS]

    def get_command(self, ctx: Context, name: str) -> Command | None:
        if name in _LAZY_COMMANDS:
            return _load_command(name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in self.commands.items() if not cmd.hidden]
        rows += [(name, text) for name, (_, _, text) in _LAZY_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _load_command(name: str) -> Command | None:
    module, attribute, text = _LAZY_COMMANDS[name]
    try:
        function = getattr(importlib.import_module(module, __package__), attribute)
    except ImportError:  # an optional part that is not installed: the command does not exist
        return None
    holder = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                         context_settings={"help_option_names": ["-h", "--help"]})
    holder.command(name, help=text)(function)
    return typer.main.get_command(holder)


app = typer.Typer(
    name="starcli",
    cls=_Commands,
    help="Ask questions about, and summarize, documents far longer than one GPU handles (Star Attention).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # usage errors are one `starcli: error:` line (main), not a box
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- shared options --------------------------------------------------------------------------------
Model = Annotated[Optional[str], typer.Option("--model", "-m", envvar="STARCLI_MODEL", help="Model folder, .gguf file or cached hub id (default: the embedded model).")]
Attention = Annotated[str, typer.Option(envvar="STARCLI_ATTENTION", help="star, dense (full attention, one process) or ring (exact context parallel).")]
BlockSize = Annotated[Optional[int], typer.Option(envvar="STARCLI_BLOCK_SIZE", help="Tokens per block (default: about N/4, a multiple of 128).")]
AnchorSize = Annotated[Optional[int], typer.Option(envvar="STARCLI_ANCHOR_SIZE", help="Anchor tokens (default: the block size).")]
Relay = Annotated[Optional[int], typer.Option(envvar="STARCLI_RELAY", help="Tokens at the end of the previous block each block also attends to through their cached KV; 0 for plain star (default: the whole block with default blocks, else 0).")]
MaxNewTokens = Annotated[int, typer.Option(envvar="STARCLI_MAX_NEW_TOKENS", help="Most tokens to generate.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
TopK = Annotated[int, typer.Option(help="Sample among the k likeliest (0 = all).")]
Seed = Annotated[Optional[int], typer.Option(help="Seed for sampling.")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text is generated (repeatable).")]
Device = Annotated[str, typer.Option(envvar="STARCLI_DEVICE", help="auto, cpu or cuda.")]
Dtype = Annotated[str, typer.Option(envvar="STARCLI_DTYPE", help="auto (bf16 on GPU and on CPUs with native bf16, else float32), float32, bfloat16, float16.")]
Kernel = Annotated[str, typer.Option(envvar="STARCLI_KERNEL", help="auto, flash-attn, cudnn, flash-sdpa, cpu-flash or math.")]
Eager = Annotated[bool, typer.Option("--eager", envvar="STARCLI_EAGER", help="Decode without a CUDA graph (the reference path; the CPU always decodes this way).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of streaming text.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="Print the answer only.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
MaxFileBytes = Annotated[int, typer.Option(help="Skip files larger than this inside directories.")]
Include = Annotated[Optional[list[str]], typer.Option("--include", help="Only files matching this glob (repeatable).")]
Exclude = Annotated[Optional[list[str]], typer.Option("--exclude", help="Skip files matching this glob (repeatable).")]
Password = Annotated[Optional[str], typer.Option(envvar="STARCLI_PDF_PASSWORD", help="Password for encrypted PDFs.")]
Procs = Annotated[Optional[int], typer.Option(help="Run on N CPU processes (gloo); needs --device cpu.")]
Gpus = Annotated[Optional[int], typer.Option(help="Run on N GPUs (default: all visible when the document has 32K+ tokens).")]
Nnodes = Annotated[int, typer.Option(help="Machines in a multi-node run (each runs the same command).")]
NodeRank = Annotated[int, typer.Option(help="This machine's index in a multi-node run.")]
RdzvEndpoint = Annotated[Optional[str], typer.Option(help="HOST:PORT of the rendezvous for multi-node runs.")]
Timeout = Annotated[float, typer.Option(help="Seconds before a stuck collective fails the run.")]
Truncate = Annotated[bool, typer.Option("--truncate", help="Cut the document to fit the model's window (reported on stderr).")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Allow a model folder's own Python code to run.")]
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle weight files (loaded with weights_only).")]
Cache = Annotated[bool, typer.Option("--cache", envvar="STARCLI_DOC_CACHE", help="Keep the encoded document on disk and reuse it for later questions (see `starcli cache`).")]
Long = Annotated[str, typer.Option("--long", help="Input longer than the window: refuse (with both sizes and the choices) or map (answer each window-sized section, then combine the answers).")]
Window = Annotated[Optional[int], typer.Option("--window", help="Most tokens one pass holds (prompt + answer), below the model's own window; longer input is refused, read in sections or truncated.")]
RopeScaling = Annotated[Optional[str], typer.Option("--rope-scaling", envvar="STARCLI_ROPE_SCALING", help="Stretch a RoPE model's window, TYPE:FACTOR with TYPE yarn or linear (e.g. yarn:4); less accurate past the trained length. The default model stretches itself with YaRN (up to x4) when the input needs it; none refuses instead.")]


def _fail(message: str, code: int) -> None:
    print(f"starcli: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _run(debug: bool, body) -> None:
    """Run a command body, turning known failures into one line and an exit code."""
    try:
        from ..app.ask import UserError
        from ..model.resolve import ModelError
        from ..ingest import SourceError
        from ..star.engine import EngineError

        if not debug:
            # library warnings are not for users of a command line tool; --debug shows them
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
    except KeyboardInterrupt:
        _interrupted()
    try:
        body()
    except UserError as exc:
        _debug_trace(debug)
        _fail(str(exc), exc.code)
    except (SourceError, ModelError, EngineError) as exc:
        _debug_trace(debug)
        _fail(str(exc), 1)
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"{type(exc).__name__}: {first} (run with --debug for the traceback)", 1)


def _interrupted() -> None:
    print("\nstarcli: interrupted", file=sys.stderr)
    raise typer.Exit(130)


def _debug_trace(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def _settings(model, attention, block_size, anchor_size, relay, max_new_tokens, temperature, top_p, top_k, seed, stop, device, dtype, kernel, trust_remote_code, allow_pickle, cache=False, rope_scaling=None, eager=False) -> RunSettings:
    from ..run.session import RunSettings

    return RunSettings(
        model=model, device=device, dtype=dtype, attention=attention, block_size=block_size, anchor_size=anchor_size, relay=relay,
        kernel=kernel, eager=eager, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
        stop=list(stop or []), trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, cache=cache,
        rope_scaling=rope_scaling,
    )


def _stdin_sources(sources: list[str]) -> list[str]:
    from ..app.ask import UserError, stdin_is_piped

    if sources:
        return sources
    if stdin_is_piped():
        return ["-"]
    raise UserError("no input: name files or directories, or pipe text in (e.g. `git diff | starcli ask \"...\"`)", code=2)


@app.command()
def ask(
    args: Annotated[list[str], typer.Argument(metavar="SOURCE... QUESTION", help="Files, directories or - for stdin, then the question.", show_default=False)],
    question: Annotated[Optional[list[str]], typer.Option("--question", "-q", help="A question (repeatable); then every argument is a source.")] = None,
    model: Model = None, attention: Attention = "star", block_size: BlockSize = None, anchor_size: AnchorSize = None, relay: Relay = None,
    max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
    seed: Seed = None, stop: Stop = None, device: Device = "auto", dtype: Dtype = "auto", kernel: Kernel = "auto", eager: Eager = False,
    json_output: JsonOut = False, quiet: Quiet = False, debug: Debug = False,
    max_file_bytes: MaxFileBytes = 1_000_000, include: Include = None, exclude: Exclude = None, password: Password = None,
    procs: Procs = None, gpus: Gpus = None, nnodes: Nnodes = 1, node_rank: NodeRank = 0, rdzv_endpoint: RdzvEndpoint = None,
    timeout: Timeout = 120.0, truncate: Truncate = False, trust_remote_code: TrustRemoteCode = False, allow_pickle: AllowPickle = False,
    cache: Cache = False, long: Long = "refuse", window: Window = None, rope_scaling: RopeScaling = None,
):
    """Answer a question about files, a repository, a PDF or piped text."""
    def body():
        from ..app.ask import UserError

        if question:
            sources, questions = list(args), list(question)
        else:
            if not args:
                raise UserError("missing the question (the last argument)", code=2)
            sources, questions = list(args[:-1]), [args[-1]]
        ask_impl(_stdin_sources(sources), questions, locals_of_command)

    locals_of_command = dict(locals())
    _run(debug, body)


def _request(sources: list[str], questions: list[str], o: dict) -> AskRequest:
    """An AskRequest from the options ask and summarize share (their parameter names)."""
    from ..app.ask import AskRequest, Placement
    from ..ingest import IngestOptions

    return AskRequest(
        sources, questions,
        _settings(o["model"], o["attention"], o["block_size"], o["anchor_size"], o["relay"], o["max_new_tokens"], o["temperature"],
                  o["top_p"], o["top_k"], o["seed"], o["stop"], o["device"], o["dtype"], o["kernel"],
                  o["trust_remote_code"], o["allow_pickle"], o["cache"], o["rope_scaling"], o["eager"]),
        IngestOptions(max_file_bytes=o["max_file_bytes"], include=list(o["include"] or []),
                      exclude=list(o["exclude"] or []), password=o["password"]),
        Placement(o["procs"], o["gpus"], o["nnodes"], o["node_rank"], o["rdzv_endpoint"], o["timeout"]),
        o["truncate"], long=o["long"], words=o.get("words"), window=o["window"],
    )


def ask_impl(sources: list[str], questions: list[str], options: dict) -> None:
    from ..app.ask import ask as run_ask
    from .render import Renderer

    request = _request(sources, questions, options)
    renderer = Renderer(json_output=options["json_output"], quiet=options["quiet"])
    stdin = sys.stdin.buffer if "-" in request.sources else None
    run_ask(request, renderer, stdin)


@app.command()
def summarize(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, PDFs, or - for stdin.", show_default=False)] = None,
    words: Annotated[Optional[int], typer.Option(help="Rough length of the summary in words.")] = None,
    model: Model = None, attention: Attention = "star", block_size: BlockSize = None, anchor_size: AnchorSize = None, relay: Relay = None,
    max_new_tokens: MaxNewTokens = 768, temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
    seed: Seed = None, stop: Stop = None, device: Device = "auto", dtype: Dtype = "auto", kernel: Kernel = "auto", eager: Eager = False,
    json_output: JsonOut = False, quiet: Quiet = False, debug: Debug = False,
    max_file_bytes: MaxFileBytes = 1_000_000, include: Include = None, exclude: Exclude = None, password: Password = None,
    procs: Procs = None, gpus: Gpus = None, nnodes: Nnodes = 1, node_rank: NodeRank = 0, rdzv_endpoint: RdzvEndpoint = None,
    timeout: Timeout = 120.0, truncate: Truncate = False, trust_remote_code: TrustRemoteCode = False, allow_pickle: AllowPickle = False,
    cache: Cache = False, window: Window = None, rope_scaling: RopeScaling = None,
):
    """Summarize the whole input; input longer than the window is summarized section by section, then the section summaries are combined."""
    def body():
        from ..app.ask import UserError, summary_question

        if words is not None and words < 1:
            raise UserError(f"--words must be positive, got {words}", code=2)
        ask_impl(_stdin_sources(list(sources or [])), [summary_question(words)], {**locals_of_command, "long": "summary"})

    locals_of_command = dict(locals())
    _run(debug, body)


@app.command()
def chat(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories or PDFs to talk about.", show_default=False)] = None,
    model: Model = None, attention: Attention = "star", block_size: BlockSize = None, anchor_size: AnchorSize = None, relay: Relay = None,
    max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
    seed: Seed = None, stop: Stop = None, device: Device = "auto", dtype: Dtype = "auto", kernel: Kernel = "auto", eager: Eager = False,
    debug: Debug = False, max_file_bytes: MaxFileBytes = 1_000_000, include: Include = None, exclude: Exclude = None,
    password: Password = None, trust_remote_code: TrustRemoteCode = False, allow_pickle: AllowPickle = False,
    rope_scaling: RopeScaling = None,
):
    """Encode the input once, then answer questions interactively (follow-ups keep the conversation)."""
    def body():
        from ..app.ask import AskRequest, UserError
        from ..app.ask import chat as run_chat
        from .render import Renderer
        from ..ingest import IngestOptions

        if not sources:
            raise UserError("chat needs files or directories (questions are read from the terminal)", code=2)
        request = AskRequest(
            list(sources), [],
            _settings(model, attention, block_size, anchor_size, relay, max_new_tokens, temperature, top_p, top_k, seed, stop,
                      device, dtype, kernel, trust_remote_code, allow_pickle, rope_scaling=rope_scaling, eager=eager),
            IngestOptions(max_file_bytes=max_file_bytes, include=list(include or []), exclude=list(exclude or []), password=password),
        )
        run_chat(request, Renderer(), _read_question)

    _run(debug, body)


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


@app.command("count")
def count_command(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, PDFs, or - for stdin.", show_default=False)] = None,
    model: Model = None, attention: Attention = "star", block_size: BlockSize = None, anchor_size: AnchorSize = None, relay: Relay = None,
    device: Device = "auto", json_output: JsonOut = False, quiet: Quiet = False, debug: Debug = False,
    max_file_bytes: MaxFileBytes = 1_000_000, include: Include = None, exclude: Exclude = None, password: Password = None,
    procs: Procs = None, gpus: Gpus = None, nnodes: Nnodes = 1,
):
    """Count tokens per file and in total, and show the blocks and ranks a run would use."""
    def body():
        from ..app.ask import Placement
        from ..app.ask import count as run_count
        from ..run.session import RunSettings
        from .render import Renderer
        from ..ingest import IngestOptions

        settings = RunSettings(model=model, attention=attention, block_size=block_size, anchor_size=anchor_size, relay=relay, device=device)
        srcs = _stdin_sources(list(sources or []))
        renderer = Renderer(quiet=quiet)
        result = run_count(srcs, settings, IngestOptions(max_file_bytes=max_file_bytes, include=list(include or []), exclude=list(exclude or []), password=password),
                       Placement(procs, gpus, nnodes), renderer, sys.stdin.buffer if "-" in srcs else None)
        renderer._stop_progress()
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

    _run(debug, body)


@app.command("models")
def models_command(json_output: JsonOut = False, debug: Debug = False):
    """List the embedded default model and the converted models in the cache."""
    def body():
        from ..model.resolve import list_models

        entries = list_models()
        if json_output:
            print(json.dumps(entries, indent=2, default=str))
            return
        for entry in entries:
            size = entry.get("size_bytes")
            from .render import format_bytes

            print("  ".join(str(x) for x in (entry.get("name"), entry.get("kind"), entry.get("status", ""), format_bytes(size) if size else "", entry.get("path", "")) if x != ""))

    _run(debug, body)


cache_app = typer.Typer(help="The document cache kept by --cache: list, remove, clear.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def cache_ls(json_output: JsonOut = False):
    """List cached documents, most recently used first."""
    from ..cache import documents as doc_cache
    from .render import format_bytes

    found = doc_cache.entries()
    if json_output:
        print(json.dumps(found, indent=2))
        return
    for e in found:
        print(f"{e['id']}  {_when(e.get('created'))}  {format_bytes(e['bytes']):>10}  {e.get('num_tokens', '?'):>8} tokens  "
              f"{e.get('attention', '?')} b={e.get('block_size', '?')} a={e.get('anchor_size', '?')} r={e.get('relay', '?')} "
              f"rank {e.get('rank', '?')}/{e.get('world_size', '?')}  {_sources(e.get('sources'))}")
    total = sum(e["bytes"] for e in found)
    print(f"{len(found)} entries, {format_bytes(total)} in {doc_cache.documents_dir()}", file=sys.stderr)


def _when(created: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "????-??-?? ??:??"


def _sources(sources: list[str] | None) -> str:
    """The first source and how many more; entries from older versions recorded none."""
    if not sources:
        return "(source not recorded)"
    return sources[0] + (f" (+{len(sources) - 1} more)" if len(sources) > 1 else "")


@cache_app.command("rm")
def cache_rm(ids: Annotated[list[str], typer.Argument(help="Entry ids from `starcli cache ls`.")]):
    """Remove cached documents."""
    from ..cache import documents as doc_cache

    known = {e["id"] for e in doc_cache.entries()}
    for entry_id in ids:
        if entry_id not in known:
            _fail(f"no cache entry {entry_id!r} (see `starcli cache ls`)", 1)
        doc_cache.remove(entry_id)
        print(f"removed {entry_id}", file=sys.stderr)


@cache_app.command("clear")
def cache_clear():
    """Remove every cached document."""
    from ..cache import documents as doc_cache

    print(f"removed {doc_cache.clear()} entries", file=sys.stderr)


@app.command("worker", hidden=False)
def worker_command(
    job: Annotated[str, typer.Option(help="Job file (token ids and settings, JSON) as the launcher of `starcli ask --procs N` or `--gpus N` writes it for each rank.")],
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cuda",
    events: Annotated[Optional[str], typer.Option(help="HOST:PORT to stream events to (set by the launcher).")] = None,
    timeout: Timeout = 120.0,
):
    """Run one rank of a job (for clusters that start ranks themselves with torchrun's variables set)."""
    from ..run.worker import run_and_exit

    run_and_exit(["--job", job, "--device", device, "--timeout", str(timeout)] + (["--events", events] if events else []))


def version_callback(value: bool) -> None:
    if value:
        print(f"starcli {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False):
    pass


def main() -> None:
    # From here on Ctrl-C is a KeyboardInterrupt, which the commands turn into exit 130 after
    # ending what they started (ranks, progress display).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        print(f"starcli: error: {_usage_message(exc)}", file=sys.stderr)
        code = 2
    except (typer.Abort, KeyboardInterrupt):
        print("\nstarcli: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: UsageError) -> str:
    """One line: a bad value names the option as typed, or the environment variable it came from."""
    if isinstance(exc, BadParameter) and exc.param is not None and exc.param.param_type_name == "option":
        return f"invalid value for {_given_as(exc.param, exc.ctx)}: {exc.message}"
    return " ".join(exc.format_message().split())


def _given_as(param: Parameter, ctx: Context | None) -> str:
    if ctx is not None and param.name and ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
        return f"{param.envvar} (the environment variable behind {max(param.opts, key=len)})"
    return max(param.opts, key=len)


signal.signal(signal.SIGINT, _sigint_before_import)

if __name__ == "__main__":
    main()
