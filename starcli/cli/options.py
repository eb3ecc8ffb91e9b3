"""The options the commands share, in groups, and the decorator that gives a command its groups.

A group is a dataclass whose fields are Typer options. ``@uses(model=ModelOptions, ...)`` adds each
group's fields to the command's parameters (so ``--help`` and parsing see plain options) and
hands the command one instance per group instead, under the name given; ``defaults`` changes a
field's default for that command alone (``summarize`` writes longer answers than ``ask``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Callable, Optional

import typer

Model = Annotated[Optional[str], typer.Option("--model", "-m", envvar="STARCLI_MODEL", help="Model folder, .gguf file or cached hub id (default: the embedded model).")]
Device = Annotated[str, typer.Option(envvar="STARCLI_DEVICE", help="auto, cpu or cuda.")]
Attention = Annotated[str, typer.Option(envvar="STARCLI_ATTENTION", help="auto (dense or star by the document's length, the ranks and the device, as measured; the report says which and why; with --block-size, --anchor-size or --relay: star), star, dense (full attention, one process) or ring (exact context parallel).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of streaming text.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="Print the answer only.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
Procs = Annotated[Optional[int], typer.Option(help="Run on N CPU processes (gloo); needs --device cpu.")]
Gpus = Annotated[Optional[int], typer.Option(help="Run on N GPUs (default: all visible when the document has 32K+ tokens).")]
Nnodes = Annotated[int, typer.Option(help="Machines in a multi-node run (each runs the same command).")]
Timeout = Annotated[float, typer.Option(help="Seconds before a stuck collective fails the run.")]
Truncate = Annotated[bool, typer.Option("--truncate", help="Cut the document to fit the model's window (reported on stderr).")]
Cache = Annotated[bool, typer.Option("--cache", envvar="STARCLI_DOC_CACHE", help="Keep the encoded document on disk and reuse it for later questions (see `starcli cache`).")]
WindowLimit = Annotated[Optional[int], typer.Option("--window", help="Most tokens one pass holds (prompt + answer), below the model's own window; longer input is refused, read in sections or truncated.")]


@dataclass
class ModelOptions:
    model: Model = None
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow a model folder's own Python code to run.")] = False
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle weight files (loaded with weights_only).")] = False
    rope_scaling: Annotated[Optional[str], typer.Option("--rope-scaling", envvar="STARCLI_ROPE_SCALING", help="Stretch a RoPE model's window, TYPE:FACTOR with TYPE yarn or linear (e.g. yarn:4); less accurate past the trained length. Models of a family that documents YaRN (Qwen2, Qwen2.5: up to x4) stretch themselves when the input needs it; none refuses instead.")] = None


@dataclass
class StarOptions:
    attention: Attention = "auto"
    block_size: Annotated[Optional[int], typer.Option(envvar="STARCLI_BLOCK_SIZE", help="Tokens per block (default: auto's choice; with --attention star about N/4, a multiple of 128).")] = None
    anchor_size: Annotated[Optional[int], typer.Option(envvar="STARCLI_ANCHOR_SIZE", help="Anchor tokens (default: the block size).")] = None
    relay: Annotated[Optional[int], typer.Option(envvar="STARCLI_RELAY", help="Tokens at the end of the previous block each block also attends to through their cached KV; 0 for plain star (default: auto's choice; with --attention star the whole block with default blocks, else 0).")] = None


@dataclass
class DeviceOptions:
    device: Device = "auto"
    dtype: Annotated[str, typer.Option(envvar="STARCLI_DTYPE", help="auto (bf16 on GPU and on CPUs with native bf16, else float32), float32, bfloat16, float16.")] = "auto"
    kernel: Annotated[str, typer.Option(envvar="STARCLI_KERNEL", help="auto, flash-attn, cudnn, flash-sdpa, cpu-flash or math.")] = "auto"
    eager: Annotated[bool, typer.Option("--eager", envvar="STARCLI_EAGER", help="Decode without a CUDA graph (the reference path; the CPU always decodes this way).")] = False


@dataclass
class AnswerOptions:
    max_new_tokens: Annotated[int, typer.Option(envvar="STARCLI_MAX_NEW_TOKENS", help="Most tokens to generate.")] = 512
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature; 0 = greedy (default: the model's own, from its generation config).")] = None
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling mass (default: the model's own, else 1).")] = None
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k likeliest, 0 = all (default: the model's own, else 0).")] = None
    repetition_penalty: Annotated[Optional[float], typer.Option(help="Discourage tokens the answer already holds (never the document's), 1 = off (default: the model's own, else 1).")] = None
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling; a sampled run's report names the seed it used (default: a random one).")] = None
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text is generated (repeatable).")] = None


@dataclass
class InputOptions:
    max_file_bytes: Annotated[int, typer.Option(help="Skip files larger than this inside directories.")] = 1_000_000
    include: Annotated[Optional[list[str]], typer.Option("--include", help="Only files matching this glob (repeatable).")] = None
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Skip files matching this glob (repeatable).")] = None
    password: Annotated[Optional[str], typer.Option(envvar="STARCLI_PDF_PASSWORD", help="Password for encrypted PDFs.")] = None

    def ingest(self):
        from ..ingest.options import IngestOptions

        return IngestOptions(max_file_bytes=self.max_file_bytes, include=list(self.include or []),
                             exclude=list(self.exclude or []), password=self.password)


@dataclass
class PlacementOptions:
    procs: Procs = None
    gpus: Gpus = None
    nnodes: Nnodes = 1
    node_rank: Annotated[int, typer.Option(help="This machine's index in a multi-node run.")] = 0
    rdzv_endpoint: Annotated[Optional[str], typer.Option(help="HOST:PORT of the rendezvous for multi-node runs.")] = None
    timeout: Timeout = 120.0

    def placement(self):
        from ..app.requests import Placement

        return Placement(self.procs, self.gpus, self.nnodes, self.node_rank, self.rdzv_endpoint, self.timeout)


ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="STARCLI_API_KEY", help="The server's API key (sent as a bearer token; `serve`: required of every request).")]


@dataclass
class ServerOptions:
    server: Annotated[Optional[str], typer.Option("--server", envvar="STARCLI_SERVER", help="URL of a running `starcli serve`: the files are read here, the model there (default: run in this process).")] = None
    api_key: ApiKey = None


@dataclass
class OutputOptions:
    json_output: JsonOut = False
    quiet: Quiet = False

    def renderer(self):
        from .render import Renderer

        return Renderer(json_output=self.json_output, quiet=self.quiet)


def run_settings(model: ModelOptions, star: StarOptions, device: DeviceOptions, answer: AnswerOptions | None = None,
                 cache: bool = False):
    """The engine's settings from the option groups a command has."""
    from ..run.settings import RunSettings

    answer = answer or AnswerOptions()
    return RunSettings(
        model=model.model, device=device.device, dtype=device.dtype, attention=star.attention,
        block_size=star.block_size, anchor_size=star.anchor_size, relay=star.relay, kernel=device.kernel,
        eager=device.eager, max_new_tokens=answer.max_new_tokens, temperature=answer.temperature,
        top_p=answer.top_p, top_k=answer.top_k, repetition_penalty=answer.repetition_penalty, seed=answer.seed,
        stop=list(answer.stop or []),
        trust_remote_code=model.trust_remote_code, allow_pickle=model.allow_pickle, cache=cache,
        rope_scaling=model.rope_scaling,
    )


@dataclass
class AskOptions:
    """Every group of a command that reads a document and answers it (ask, summarize)."""

    model: ModelOptions
    star: StarOptions
    device: DeviceOptions
    answer: AnswerOptions
    inputs: InputOptions
    placement: PlacementOptions
    output: OutputOptions
    server: ServerOptions

    def request(self, sources: list[str], questions: list[str], *, cache: bool, **fields):
        """The ``AskRequest`` these options describe; ``fields``: the command's own (truncate, long, ...)."""
        from ..app.requests import AskRequest

        return AskRequest(sources, questions, run_settings(self.model, self.star, self.device, self.answer, cache=cache),
                          self.inputs.ingest(), self.placement.placement(), **fields)


def _leaves(group: type) -> list[tuple[str, object, object]]:
    """(name, annotation, default) of every option in ``group``, its nested groups' included."""
    hints = typing.get_type_hints(group, include_extras=True)
    out = []
    for field in dataclasses.fields(group):
        if dataclasses.is_dataclass(hints[field.name]):
            out += _leaves(hints[field.name])
        else:
            out.append((field.name, hints[field.name], field.default))
    return out


def _build(group: type, values: dict):
    hints = typing.get_type_hints(group, include_extras=True)
    return group(**{f.name: _build(hints[f.name], values) if dataclasses.is_dataclass(hints[f.name]) else values[f.name]
                    for f in dataclasses.fields(group)})


def uses(defaults: dict | None = None, **groups: type) -> Callable:
    """Give a command the option groups ``groups`` (parameter name -> group class)."""
    defaults = defaults or {}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in signature.parameters.items()
               if name not in groups]
        leaves = {name: _leaves(group) for name, group in groups.items()}
        added = [inspect.Parameter(leaf, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(leaf, default), annotation=kind)
                 for name in groups for leaf, kind, default in leaves[name]]

        @functools.wraps(command)
        def with_groups(*args, **kwargs):
            # every group's values first: a group may share its name with a field of its own (--model)
            values = {name: {leaf: kwargs.pop(leaf) for leaf, _, _ in leaves[name]} for name in groups}
            return command(*args, **kwargs, **{name: _build(groups[name], values[name]) for name in groups})

        parameters = own + added
        with_groups.__signature__ = signature.replace(parameters=parameters)
        with_groups.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_groups

    return decorate
