"""``starcli bench``: time the engine itself (``StarEngine``) on random-weight or real models.

Each cell is one (document length, attention mode, block size) on every rank of the run:

- phase 1: ``engine.encode_context`` of random token ids, per ``plan_partition``;
- time to first token: phase 1 plus the question's prefill (``EncodeStats.seconds`` +
  ``AnswerStats.prefill_seconds``);
- decode: greedy tokens after a warm-up, timed between two token callbacks;
- peak memory per rank, FLOPs the method needs, achieved TFLOP/s against a matmul ceiling measured
  at start on the same device.

``hf-dense`` is the user's existing baseline: one transformers forward (``sdpa``) of the document
plus question, so the engine's own ``dense`` can be checked against it. ``hf-static`` is the peer
for phase 2: transformers' ``generate`` with a static cache (which it compiles for decoding) on the
same model, timed the same way (first token, then decode after the same warm-up).

Engine cells run once per ``--decodes`` entry: ``auto`` (a captured CUDA graph on CUDA, eager on
the CPU), ``eager`` (the reference), ``static`` (the graph's fixed-shape step without capture).

Several ranks: the command relaunches itself under ``torch.distributed.run``; every rank runs the
same cells in the same order (collectives must pair up) and rank 0 gathers, prints and writes JSON.
"""

import copy
import datetime
import gc
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import torch
import typer
from transformers import LlamaConfig, PretrainedConfig, Qwen2Config

from ..model.resolve import pick_dtype
from ..star import attention
from ..star.comm import Comm, init_comm
from ..star.decode_threads import tuned_decode_threads
from ..star.engine import DEFAULT_PASS_TOKENS, EngineError, StarEngine, resolve_decode
from ..star.kernels import KERNELS, KernelError, resolve_kernel
from ..star.partition import Partition, PartitionError, plan_dense, plan_ring, plan_star

# Named model shapes. Only shapes matter for speed, so weights are random; never zeros, which draw
# less power on a GPU and so time faster than real weights would.
SHAPES: dict[str, PretrainedConfig] = {
    "llama3-8b": LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
        max_position_embeddings=2 * 1024 * 1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "qwen2.5-0.5b": Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        rope_theta=1000000.0,
        max_position_embeddings=32768,  # raised per run to cover the longest bench length
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
    ),
    "tiny": LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
}

ENGINE_MODES = ("dense", "star", "ring")
HF_MODES = ("hf-dense", "hf-static")
MODES = ENGINE_MODES + HF_MODES
SINGLE_PROCESS_MODES = ("dense",) + HF_MODES
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}
_SUFFIXES = {"k": 1024, "m": 1024 * 1024}
GIB = 1024**3

# Matmul ceiling sizes: large enough to reach the device's peak, small enough to take seconds.
_MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}
# The warm-up cell uses at most this many tokens: enough to touch every kernel path cheaply.
_WARMUP_LENGTH = 2048
# Set by the launching process so every rank records the command the user actually typed.
_COMMAND_ENV = "STARCLI_BENCH_COMMAND"
# This module's import name, also when it runs as ``__main__`` (the ranks are started with ``-m``).
_MODULE = "starcli.tools.bench"
# Seconds a multi-rank run may take before all its ranks are ended (None: no limit; tests bound it).
_RELAUNCH_TIMEOUT_S: Optional[float] = None


class BenchError(ValueError):
    """A bad option value, with a one-line message for the user."""


# --- parsing --------------------------------------------------------------------------------------
def parse_lengths(text: str) -> list[int]:
    """``"32k,128k,1m,1000"`` -> ``[32768, 131072, 1048576, 1000]`` (k = 1024, m = 1024²)."""
    values = []
    for raw in str(text).split(","):
        item = raw.strip().lower()
        if not item:
            raise BenchError(f"empty entry in {text!r}")
        scale = _SUFFIXES.get(item[-1], 1)
        digits = item[:-1] if item[-1] in _SUFFIXES else item
        try:
            number = float(digits) if "." in digits else int(digits)
        except ValueError:
            raise BenchError(f"{raw.strip()!r} is not a length (examples: 1000, 32k, 1m)") from None
        value = number * scale
        if value != int(value) or value <= 0:
            raise BenchError(f"{raw.strip()!r} is not a positive whole number of tokens")
        values.append(int(value))
    return values


def parse_modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not modes:
        raise BenchError("--modes is empty")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise BenchError(f"unknown mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


# --- FLOPs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDims:
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "ModelDims":
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            q_heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
        )

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' matmuls, counted from the config (not from a model).

        Per layer: q and o projections hidden·Hq·d each, k and v hidden·Hkv·d each, and a gated MLP
        of three hidden·intermediate matrices. Norms and biases are left out (additions, not
        multiply-adds), and so are the embedding and LM head: the engine never computes logits for
        document tokens.
        """
        attn = self.hidden * self.head_dim * (2 * self.q_heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    def attention_flops(self, score_entries: int) -> int:
        """QKᵀ and PV: 2·d multiply-adds each per (query, key) entry, for every query head and layer."""
        return 4 * self.layers * self.q_heads * self.head_dim * score_entries


def _triangle(n: int) -> int:
    """Score entries of causal self-attention over n tokens (diagonal included)."""
    return n * (n + 1) // 2


def score_entries(partition: Partition, rank: int) -> int:
    """(query, key) pairs ``rank`` computes in phase 1 under ``partition``'s attention pattern.

    star: block 0 causal; every other block sees the whole anchor (a·|b|), its relayed tokens of the
    previous block (r·|b|) and itself causally (the anchor's KV comes from rank 0, so no rank
    encodes it twice). dense and ring: exact causal attention, a chunk [s, e) costing its own triangle plus (e - s)·s for the tokens before it.
    """
    plan = partition.ranks[rank]
    if partition.attention == "star":
        a = partition.anchor_size
        total = 0
        for block in plan.blocks:
            total += _triangle(block.length) + (0 if block.index == 0 else (a + block.relay) * block.length)
        return total
    return sum(_triangle(b.length) + b.length * b.start for b in plan.blocks)


def linear_tokens(partition: Partition, rank: int) -> int:
    """Tokens ``rank`` pushes through the projections and MLPs in phase 1: its own blocks, never the
    anchor, which rank 0 encodes inside block 0."""
    return sum(b.length for b in partition.ranks[rank].blocks)


def phase1_flops(dims: ModelDims, partition: Partition) -> list[int]:
    """FLOPs of phase 1 on each rank: 2·P·tokens + attention over the method's score entries."""
    return [
        2 * dims.linear_params * linear_tokens(partition, r) + dims.attention_flops(score_entries(partition, r))
        for r in range(partition.world_size)
    ]


def forward_flops(dims: ModelDims, tokens: int) -> int:
    """One causal forward of ``tokens`` tokens with logits for the last one only (the hf-dense row)."""
    return 2 * dims.linear_params * tokens + dims.attention_flops(_triangle(tokens)) + 2 * dims.hidden * dims.vocab


def estimate_cell_bytes(
    dims: ModelDims, partition: Optional[Partition], rank: int, *, dtype_bytes: int, weight_bytes: int,
    pass_tokens: int, tail_tokens: int, hf_tokens: int = 0,
) -> int:
    """Rough memory one rank would need for a cell (reported when it runs out of memory).

    Weights + the KV this rank keeps (document share, anchor, question/answer tail) + the live
    activations of the largest forward pass (residual, q/k/v, MLP intermediates of one layer) +
    for ring the whole sequence's K/V of one layer, gathered and then assembled.
    """
    kv_per_token = 2 * dims.layers * dims.kv_heads * dims.head_dim * dtype_bytes
    per_token_act = (4 * dims.hidden + 2 * (dims.q_heads + 2 * dims.kv_heads) * dims.head_dim + 3 * dims.intermediate)
    if partition is None:  # one transformers forward, no cache kept
        return weight_bytes + hf_tokens * per_token_act * dtype_bytes
    plan = partition.ranks[rank]
    kept = plan.num_tokens + (tail_tokens if rank == partition.world_size - 1 else 0)
    extra = 0
    if partition.attention == "star":
        kept += partition.anchor_size if plan.needs_anchor else 0
        largest, current = 0, 0
        for block in plan.blocks:  # whole blocks grouped up to pass_tokens, as the engine does
            current = current + block.length if current and current + block.length <= pass_tokens else block.length
            largest = max(largest, current)
        pass_size = max(largest, partition.anchor_size)
    elif partition.attention == "dense":
        pass_size = min(partition.num_tokens, pass_tokens)
    else:
        pass_size = plan.num_tokens
        extra = 2 * 2 * dims.kv_heads * dims.head_dim * partition.num_tokens * dtype_bytes
    return weight_bytes + kept * kv_per_token + pass_size * per_token_act * dtype_bytes + extra


# --- device helpers -------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB elsewhere


def _total_bytes(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return None


def _free_bytes(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} ({torch.get_num_threads()} threads)"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: Optional[int] = None) -> float:
    """Median FLOP/s of an (n, n) @ (n, n) matmul in ``dtype`` (n = 8192 on CUDA, 2048 on CPU).

    CUDA: timed with events after enough untimed runs for clocks and kernel selection to settle
    (one 8192³ bf16 matmul is only milliseconds). CPU: a single warm-up, since each run is long.
    """
    n = size or _MATMUL_SIZE.get(device.type, 2048)
    warmup, runs = (10, 20) if device.type == "cuda" else (1, 3)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            seconds = time.perf_counter() - t0
        if i >= warmup:
            times.append(seconds)
    del a, b
    return 2 * n**3 / statistics.median(times)


# --- settings and cells ---------------------------------------------------------------------------
@dataclass
class BenchSettings:
    lengths: list[int]
    modes: list[str]
    block_sizes: list[Optional[int]]  # None: the N/4 rule
    anchor_size: Optional[int] = None
    # star relays (tokens of the previous block); None: the engine's default (partition.DEFAULT_RELAY)
    relays: list[Optional[int]] = field(default_factory=lambda: [None])
    decodes: list[str] = field(default_factory=lambda: ["auto"])  # engine decode modes (DECODE_MODES)
    shape: Optional[str] = "tiny"
    model_path: Optional[str] = None
    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "float32"
    kernel: str = "auto"
    question_tokens: int = 32
    decode_tokens: int = 32
    decode_warmup: int = 64
    repeats: int = 1
    pass_tokens: int = DEFAULT_PASS_TOKENS
    seed: int = 0
    json_path: Optional[str] = None
    matmul_size: Optional[int] = None  # None: the device's default ceiling size

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class CellSpec:
    mode: str
    length: int
    partition: Optional[Partition] = None
    block_rule: Optional[str] = None  # "N/4" or "given" for star
    skip_reason: Optional[str] = None
    estimated_need: Optional[int] = None  # bytes, set when the cell is skipped for not fitting
    decode: Optional[str] = None  # engine cells: the decode mode

    @property
    def block(self) -> Optional[int]:
        return self.partition.block_size if self.partition and self.mode == "star" else None

    @property
    def anchor(self) -> Optional[int]:
        return self.partition.anchor_size if self.partition and self.mode == "star" else None

    @property
    def relay(self) -> Optional[int]:
        return self.partition.relay if self.partition and self.mode == "star" else None


def plan_cells(settings: BenchSettings, world_size: int) -> list[CellSpec]:
    """Every cell in run order; raises BenchError for block/anchor settings no partition accepts."""
    cells = []
    for length in settings.lengths:
        for mode in settings.modes:
            if mode in SINGLE_PROCESS_MODES and world_size > 1:
                cells.append(CellSpec(mode, length, skip_reason=f"{mode} runs in one process"))
            elif mode in HF_MODES:
                cells.append(CellSpec(mode, length))
            elif mode == "dense":
                cells += [CellSpec(mode, length, plan_dense(length), decode=d) for d in settings.decodes]
            elif mode == "ring":
                cells += [CellSpec(mode, length, plan_ring(length, world_size), decode=d) for d in settings.decodes]
            else:
                for block in settings.block_sizes:
                    for relay in settings.relays:
                        try:
                            partition = plan_star(length, world_size, block, settings.anchor_size, relay=relay)
                        except PartitionError as exc:
                            raise BenchError(f"length {length}: {exc}") from None
                        cells += [CellSpec(mode, length, partition, "N/4" if block is None else "given", decode=d)
                                  for d in settings.decodes]
    return cells


def _warmup_spec(mode: str, length: int, world_size: int, decode: Optional[str] = None) -> CellSpec:
    if mode in HF_MODES:
        return CellSpec(mode, length)
    if mode == "dense":
        return CellSpec(mode, length, plan_dense(length), decode=decode)
    if mode == "ring":
        return CellSpec(mode, length, plan_ring(length, world_size), decode=decode)
    return CellSpec(mode, length, plan_star(length, world_size), decode=decode)


# --- model ----------------------------------------------------------------------------------------
def build_model(settings: BenchSettings, device: torch.device, max_positions: int):
    """A causal LM on ``device`` loaded with the engine's attention: random weights for a shape
    (built on the device directly, so an 8B model never passes through host memory) or a folder."""
    from transformers import AutoModelForCausalLM

    attention.register()
    dtype = settings.torch_dtype
    if settings.model_path:
        model = AutoModelForCausalLM.from_pretrained(settings.model_path, attn_implementation=attention.ATTENTION_NAME, dtype=dtype)
        return model.to(device).eval()
    config = copy.deepcopy(SHAPES[settings.shape])
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    torch.manual_seed(settings.seed)  # identical weights on every rank and every run
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention.ATTENTION_NAME)
    return model.eval()


def _random_ids(n: int, vocab: int, seed: int) -> torch.Tensor:
    """(n,) int64 token ids, the same on every rank for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=gen)


def _oom_message(exc: BaseException) -> Optional[str]:
    """The gist of an out-of-memory error (CUDA, or the CPU allocator), else None."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # CUDA's message goes on with allocator advice after what was asked for and what was free
    text = text.split(" Including non-PyTorch memory")[0]
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text:
        return text
    return None


# --- one sample of one cell on this rank ----------------------------------------------------------
class _Runner:
    def __init__(self, engine: StarEngine, model, comm: Comm, settings: BenchSettings, vocab: int):
        self.engine = engine
        self.model = model
        self.comm = comm
        self.device = comm.device
        self.settings = settings
        self.vocab = vocab
        self.question = _random_ids(settings.question_tokens, vocab, settings.seed + 1).tolist()

    def release(self) -> None:
        """Drop the previous cell's KV so the next cell's peak memory is its own."""
        self.engine.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def all_ok(self, ok: bool) -> bool:
        """Every rank learns whether all ranks got through, so no rank enters phase 2 alone."""
        if not self.comm.distributed:
            return ok
        flags = self.comm.gather_objects(ok, dst=0)
        verdict = int(all(flags)) if flags is not None else 0
        return bool(self.comm.broadcast_int(verdict, src=0))

    def engine_sample(self, spec: CellSpec, decode_warmup: int, decode_tokens: int) -> dict:
        """Phase 1 + answer on this rank. The first answer token comes from the prefill; then
        ``decode_warmup`` untimed decode steps, then ``decode_tokens`` timed ones."""
        doc = _random_ids(spec.length, self.vocab, self.settings.seed + spec.length)
        self.release()
        self.engine.decode = resolve_decode(spec.decode or "auto", self.device)
        _reset_peak(self.device)
        error = None
        encode = None
        try:
            self.comm.barrier()  # ranks start phase 1 together: the slowest rank's time is the wall time
            encode = self.engine.encode_context(doc, spec.partition)
        except (RuntimeError, MemoryError) as exc:
            error = _oom_message(exc)
            if error is None:
                raise
        # outside the handler: its traceback no longer pins the failed pass's tensors
        if not self.all_ok(encode is not None):
            self.release()
            return {"status": "OOM", "error": error or "another rank ran out of memory"}
        first, last = 1 + decode_warmup, 1 + decode_warmup + decode_tokens
        stamps: dict[int, float] = {}
        count = 0

        def on_token(token: int) -> bool:
            nonlocal count
            count += 1
            if count in (first, last):
                _sync(self.device)  # only at the two boundaries: syncing every token would slow decode
            stamps[count] = time.perf_counter()
            return False

        answer = None
        try:
            with tuned_decode_threads(self.device, on_token) as decode_on_token:
                _, answer = self.engine.answer(self.question, max_new_tokens=last, on_token=decode_on_token)
        except (RuntimeError, MemoryError) as exc:
            error = _oom_message(exc)
            if error is None:
                raise
        if answer is None:
            self.release()
            return {"status": "OOM", "error": error}
        return dict(
            status="ok",
            phase1_s=encode.seconds,
            prefill_s=answer.prefill_seconds,
            ttft_s=encode.seconds + answer.prefill_seconds,
            decode_ms_tok=(stamps[last] - stamps[first]) / decode_tokens * 1e3,
            capture_s=answer.capture_seconds,
            peak_bytes=_peak_bytes(self.device),
            passes=encode.passes,
            kv_tokens=encode.tokens,
            anchor_tokens=encode.anchor_tokens,
        )

    def _on_transformers(self, spec: CellSpec, call: Callable[[torch.Tensor], Any]) -> tuple[float, Optional[dict]]:
        """``call(ids)`` with the document + question ids on the model switched to transformers' own
        sdpa attention, synced before and after: (the start time, None), or (0, the OOM sample)."""
        doc = _random_ids(spec.length, self.vocab, self.settings.seed + spec.length)
        ids = torch.cat([doc, torch.tensor(self.question, dtype=torch.long)])[None].to(self.device)
        self.release()
        _reset_peak(self.device)
        self.model.set_attn_implementation("sdpa")
        try:
            _sync(self.device)
            start = time.perf_counter()
            with torch.inference_mode():
                call(ids)
            _sync(self.device)
            return start, None
        except (RuntimeError, MemoryError) as exc:
            error = _oom_message(exc)
            if error is None:
                raise
            return 0.0, {"status": "OOM", "error": error}
        finally:
            self.model.set_attn_implementation(attention.ATTENTION_NAME)

    def hf_sample(self, spec: CellSpec) -> dict:
        """One transformers forward (sdpa) of document + question, first token chosen greedily."""
        def forward(ids):
            int(torch.argmax(self.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]).item())

        start, failed = self._on_transformers(spec, forward)
        if failed:
            return failed
        seconds = time.perf_counter() - start
        return {"status": "ok", "phase1_s": seconds, "prefill_s": 0.0, "ttft_s": seconds, "decode_ms_tok": None,
                "peak_bytes": _peak_bytes(self.device)}

    def hf_static_sample(self, spec: CellSpec, decode_warmup: int, decode_tokens: int) -> dict:
        """transformers' ``generate`` with a static cache (compiled by transformers for decoding):
        time to the first new token, then decode timed like ``engine_sample``."""
        from transformers.generation.streamers import BaseStreamer

        total = 1 + decode_warmup + decode_tokens
        stamps: list[float] = []

        class Clock(BaseStreamer):
            # called with the prompt, then with each new token already copied to the host (a sync)
            def put(self, value):
                stamps.append(time.perf_counter())

            def end(self):
                pass

        def generate(ids):
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=total,
                                min_new_tokens=total, do_sample=False, cache_implementation="static",
                                streamer=Clock(), pad_token_id=0)

        start, failed = self._on_transformers(spec, generate)
        if failed:
            return failed
        first, last = 1 + decode_warmup, total  # stamps[k]: the k-th new token (stamps[0]: the prompt)
        ttft = stamps[1] - start
        return {"status": "ok", "phase1_s": ttft, "prefill_s": 0.0, "ttft_s": ttft,
                "decode_ms_tok": (stamps[last] - stamps[first]) / decode_tokens * 1e3, "peak_bytes": _peak_bytes(self.device)}

    def sample(self, spec: CellSpec, decode_warmup: int, decode_tokens: int) -> dict:
        if spec.mode == "hf-static":
            return self.hf_static_sample(spec, decode_warmup, decode_tokens)
        if spec.mode == "hf-dense":
            return self.hf_sample(spec)
        return self.engine_sample(spec, decode_warmup, decode_tokens)


# --- aggregation (rank 0) -------------------------------------------------------------------------
def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _combine_repeat(per_rank: list[dict]) -> dict:
    """One repeat across ranks: the slowest rank sets the time (the others wait for it)."""
    def worst(key):
        values = [s.get(key) for s in per_rank if s.get(key) is not None]
        return max(values) if values else None

    return {key: worst(key) for key in ("phase1_s", "prefill_s", "ttft_s", "decode_ms_tok", "capture_s")}


def summarise_cell(spec: CellSpec, samples: list[list[dict]], *, dims: ModelDims, world_size: int,
                   peak_flops: float, question_tokens: int, estimate: Callable[[CellSpec, int], int],
                   free_bytes: Optional[int]) -> dict:
    """``samples[rank][repeat]`` -> one JSON-ready cell (medians over repeats)."""
    cell: dict[str, Any] = {
        "mode": spec.mode, "length": spec.length, "block": spec.block, "anchor": spec.anchor, "relay": spec.relay,
        "block_rule": spec.block_rule, "decode": spec.decode, "ranks": world_size, "status": "ok", "note": None,
    }
    if spec.skip_reason:
        cell.update(status="skipped", note=spec.skip_reason)
        if spec.estimated_need:
            cell.update(status="too large", estimated_need_gib=spec.estimated_need / GIB)
        return cell
    failed = [s for rank in samples for s in rank if s["status"] != "ok"]
    if failed:
        need = max(estimate(spec, r) for r in range(world_size if spec.partition else 1))
        cell.update(status="OOM", note=failed[0].get("error"), estimated_need_gib=need / GIB,
                    free_gib=None if free_bytes is None else free_bytes / GIB)
        return cell
    repeats = [_combine_repeat([samples[r][i] for r in range(len(samples))]) for i in range(len(samples[0]))]
    phase1 = _median([r["phase1_s"] for r in repeats])
    if spec.mode in HF_MODES:
        flops_per_rank = [forward_flops(dims, spec.length + question_tokens)]
        tokens = spec.length + question_tokens
    else:
        flops_per_rank = phase1_flops(dims, spec.partition)
        tokens = spec.length
    total = sum(flops_per_rank)
    achieved = total / phase1 if phase1 else None
    peaks = [max(s["peak_bytes"] for s in rank) / GIB for rank in samples]
    cell.update(
        ttft_s=_median([r["ttft_s"] for r in repeats]),
        phase1_s=phase1,
        prefill_s=_median([r["prefill_s"] for r in repeats]),
        phase1_tok_s=tokens / phase1 if phase1 else None,
        decode_ms_tok=_median([r["decode_ms_tok"] for r in repeats]),
        capture_s=_median([r["capture_s"] for r in repeats]),
        peak_mem_gib=max(peaks),
        peak_mem_gib_per_rank=peaks,
        flops=total,
        flops_per_rank=flops_per_rank,
        tflops=achieved / 1e12 if achieved else None,
        tflops_per_gpu=achieved / world_size / 1e12 if achieved else None,
        pct_peak=100 * achieved / world_size / peak_flops if achieved and peak_flops else None,
        repeats=repeats,
    )
    decode_ms = cell["decode_ms_tok"]
    cell["decode_tok_s"] = 1e3 / decode_ms if decode_ms else None
    if spec.mode not in HF_MODES:
        cell.update(
            passes_per_rank=[samples[r][0].get("passes") for r in range(len(samples))],
            kv_tokens_per_rank=[samples[r][0].get("kv_tokens") for r in range(len(samples))],
            anchor_tokens_per_rank=[samples[r][0].get("anchor_tokens") for r in range(len(samples))],
        )
    return cell


def add_ratios(cells: list[dict]) -> None:
    """Speed-ups in time to first token (reference ttft / cell ttft) against the same length's
    engine dense, hf-dense and ring cells, where those ran."""
    refs: dict[tuple[str, int], float] = {}
    for c in cells:
        if c["status"] == "ok" and c["mode"] in ("dense", "hf-dense", "ring"):
            refs.setdefault((c["mode"], c["length"]), c["ttft_s"])  # the first decode mode's cell
    for c in cells:
        for mode, key in (("dense", "speedup_vs_dense"), ("hf-dense", "speedup_vs_hf_dense"), ("ring", "speedup_vs_ring")):
            ref = refs.get((mode, c["length"]))
            c[key] = ref / c["ttft_s"] if c["status"] == "ok" and ref and c.get("ttft_s") else None


# --- output ---------------------------------------------------------------------------------------
def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec or ".3g")
    return str(value)


TABLE_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("mode", lambda c: c["mode"]),
    ("length", lambda c: str(c["length"])),
    ("block", lambda c: _fmt(c.get("block"))),
    ("anchor", lambda c: _fmt(c.get("anchor"))),
    ("relay", lambda c: _fmt(c.get("relay"))),
    ("decode", lambda c: _fmt(c.get("decode"))),
    ("ranks", lambda c: str(c["ranks"])),
    ("ttft_s", lambda c: _fmt(c.get("ttft_s"), ".4g")),
    ("phase1_s", lambda c: _fmt(c.get("phase1_s"), ".4g")),
    ("phase1_tok_s", lambda c: _fmt(c.get("phase1_tok_s"), ".0f")),
    ("decode_ms_tok", lambda c: _fmt(c.get("decode_ms_tok"), ".2f")),
    ("decode_tok_s", lambda c: _fmt(c.get("decode_tok_s"), ".0f")),
    ("prefill_ms", lambda c: _fmt(1e3 * c["prefill_s"] if c.get("prefill_s") else None, ".1f")),
    ("capture_s", lambda c: _fmt(c.get("capture_s"), ".3f")),
    ("peak_mem_GiB", lambda c: _fmt(c.get("peak_mem_gib"), ".2f")),
    ("TFLOP/s", lambda c: _fmt(c.get("tflops"), ".3g")),
    ("%peak", lambda c: _fmt(c.get("pct_peak"), ".1f")),
    ("x_dense", lambda c: _fmt(c.get("speedup_vs_dense"), ".2f")),
    ("x_hf", lambda c: _fmt(c.get("speedup_vs_hf_dense"), ".2f")),
    ("x_ring", lambda c: _fmt(c.get("speedup_vs_ring"), ".2f")),
    ("note", lambda c: _note(c)),
]


def _note(cell: dict) -> str:
    if cell["status"] == "OOM":
        need = cell.get("estimated_need_gib")
        return "OOM" + (f" (needs ~{need:.1f} GiB)" if need else "")
    if cell["status"] in ("skipped", "too large"):
        return f"not run: {cell['note']}"
    return ""


def format_table(cells: list[dict]) -> str:
    """Plain aligned columns; x_* columns are ttft speed-ups over that reference (>1 = faster)."""
    rows = [[name for name, _ in TABLE_COLUMNS]] + [[get(c) for _, get in TABLE_COLUMNS] for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(v.rjust(w) if i not in (0, len(widths) - 1) else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    return "\n".join(lines)


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --- the run --------------------------------------------------------------------------------------
def run_bench(settings: BenchSettings, comm: Comm, log: Callable[[str], None] = lambda line: None) -> Optional[dict]:
    """Run every cell on this rank; rank 0 returns the report (JSON-ready dict), other ranks None."""
    import transformers

    world = comm.world_size
    device = comm.device
    cells = plan_cells(settings, world)
    tail = settings.question_tokens + 1 + settings.decode_warmup + settings.decode_tokens
    model = build_model(settings, device, max(settings.lengths) + tail + 1)
    try:
        engine = StarEngine(model, comm, kernel=settings.kernel, pass_tokens=settings.pass_tokens)
    except (EngineError, KernelError) as exc:
        raise BenchError(str(exc)) from None
    dims = ModelDims.from_config(model.config)
    dtype_bytes = torch.tensor([], dtype=settings.torch_dtype).element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    runner = _Runner(engine, model, comm, settings, model.config.vocab_size)

    matmul_size = settings.matmul_size or _MATMUL_SIZE.get(device.type, 2048)
    peak = measure_matmul_peak(device, settings.torch_dtype, matmul_size)
    peaks = comm.gather_objects(peak, dst=0)
    log(f"matmul peak {peak / 1e12:.2f} TFLOP/s ({settings.dtype}); kernel {engine.kernel}; {world} rank(s)")

    # warm kernels and the allocator once per mode, untimed
    warm_length = min(min(settings.lengths), _WARMUP_LENGTH)
    for mode in settings.modes:
        if mode in SINGLE_PROCESS_MODES and world > 1:
            continue
        for decode in settings.decodes if mode in ENGINE_MODES else [None]:
            runner.sample(_warmup_spec(mode, warm_length, world, decode), decode_warmup=1, decode_tokens=1)

    def estimate(spec: CellSpec, rank: int) -> int:
        return estimate_cell_bytes(dims, spec.partition, rank, dtype_bytes=dtype_bytes, weight_bytes=weight_bytes,
                                   pass_tokens=settings.pass_tokens, tail_tokens=tail,
                                   hf_tokens=spec.length + settings.question_tokens)

    capacity = _total_bytes(device)
    results = []
    for spec in cells:
        samples: list[dict] = []
        if capacity and not spec.skip_reason:
            # a cell that cannot fit would only fail after minutes of compute: report its need instead
            need = max(estimate(spec, r) for r in range(world if spec.partition else 1))
            if need > capacity:
                spec = copy.copy(spec)
                spec.skip_reason = (f"does not fit: needs ~{need / GIB:.1f} GiB per GPU, "
                                    f"the GPU has {capacity / GIB:.1f} GiB")
                spec.estimated_need = need
        if not spec.skip_reason:
            for _ in range(settings.repeats):
                samples.append(runner.sample(spec, settings.decode_warmup, settings.decode_tokens))
                # all ranks stop repeating together, or their collectives would no longer pair up
                if not runner.all_ok(samples[-1]["status"] == "ok"):
                    break
        runner.release()
        gathered = comm.gather_objects(samples, dst=0)
        if comm.rank == 0:
            cell = summarise_cell(spec, gathered, dims=dims, world_size=world, peak_flops=peak,
                                  question_tokens=settings.question_tokens, estimate=estimate,
                                  free_bytes=_free_bytes(device))
            results.append(cell)
            log(f"{cell['mode']} {cell['length']} block {_fmt(cell['block'])}: "
                + (f"ttft {cell['ttft_s']:.4g} s" if cell["status"] == "ok" else _note(cell)))
    runner.release()
    if comm.rank != 0:
        return None
    add_ratios(results)
    return {
        "schema": 1,
        "device": _device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "command": os.environ.get(_COMMAND_ENV) or _command_line(),
        "options": asdict(settings),
        "model": {"shape": None if settings.model_path else settings.shape, "path": settings.model_path,
                  "model_type": model.config.model_type, "linear_params": dims.linear_params, **asdict(dims),
                  "weight_gib": weight_bytes / GIB},
        "dtype": settings.dtype,
        "kernel": engine.kernel,
        "world_size": world,
        "matmul_peak_tflops": peak / 1e12,
        "matmul_peak_tflops_per_rank": [p / 1e12 for p in peaks],
        "matmul": {"size": matmul_size, "dtype": settings.dtype},
        "memory_measure": ("torch.cuda.max_memory_allocated per cell, weights included" if device.type == "cuda"
                           else "process peak RSS (lifetime high-water mark, not reset per cell)"),
        "flops_note": ("phase 1 only: 2·P·tokens (P = decoder matmul weights from the config) + "
                       "4·L·Hq·d per (query, key) score entry of the method's mask; TFLOP/s = sum over "
                       "ranks / slowest rank's time; %peak = per-rank share / matmul peak"),
        "cells": results,
    }


# --- command line ---------------------------------------------------------------------------------
def _fail(message: str) -> None:
    typer.echo(f"starcli bench: error: {message}", err=True)
    raise typer.Exit(2)


def _resolve_device(name: str) -> str:
    name = name.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cuda", "cpu"):
        raise BenchError(f"--device must be auto, cuda or cpu, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available")
    return name


def _command_line() -> str:
    """The command as typed: ``python -m starcli.tools.bench ...`` rather than this file's path."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == _MODULE:
        return shlex.join([Path(sys.executable).name, "-m", _MODULE, *sys.argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relaunch(ranks: int, argv: list[str]) -> int:
    """Run this module on ``ranks`` local processes; torchrun gets its own process group so that
    an interrupt or failure ends every rank with it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--nnodes", "1",
           "--max-restarts", "0", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", _MODULE, *argv]
    env = dict(os.environ)
    env.setdefault(_COMMAND_ENV, _command_line())
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=_RELAUNCH_TIMEOUT_S)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait()
        raise


def bench_command(
    shape: Annotated[Optional[str], typer.Option(
        "--shape", help=f"Random-weight model shape: {', '.join(SHAPES)} (default llama3-8b).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A model folder to load instead of a random shape.")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Document lengths, comma separated (k = 1024, m = 1024²).")] = "32k,128k",
    modes: Annotated[str, typer.Option("--modes", help="Comma list of dense, star, ring, hf-dense, hf-static.")] = "dense,star,ring",
    block_sizes: Annotated[Optional[str], typer.Option("--block-sizes", help="Star block sizes, comma list (default: N/4).")] = None,
    anchor_size: Annotated[Optional[str], typer.Option("--anchor-size", help="Star anchor tokens (default: the block size).")] = None,
    decodes: Annotated[str, typer.Option("--decodes", help="Engine decode modes, comma list: auto (a CUDA graph on cuda), eager (the reference), static.")] = "auto",
    relays: Annotated[Optional[str], typer.Option("--relays", help="Star relays, comma list: tokens of the previous block each block also attends to (default: the engine's, the whole block with N/4 blocks, else 0).")] = None,
    ranks: Annotated[int, typer.Option("--ranks", help="Processes (one per GPU); >1 relaunches under torch.distributed.run.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bfloat16 on cuda and on cpus with native bf16, else float32), bfloat16, float16, float32.")] = "auto",
    kernel: Annotated[str, typer.Option("--kernel", help=f"Attention kernel: {', '.join(KERNELS)}.")] = "auto",
    question_tokens: Annotated[int, typer.Option("--question-tokens", help="Question length in tokens.")] = 32,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", help="Decode steps timed.")] = 32,
    decode_warmup: Annotated[int, typer.Option("--decode-warmup", help="Decode steps run before timing.")] = 64,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per cell (median reported).")] = 1,
    pass_tokens: Annotated[int, typer.Option("--pass-tokens", help="Most document tokens per forward pass.")] = DEFAULT_PASS_TOKENS,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every cell and the run's metadata here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for weights and token ids.")] = 0,
    matmul_size: Annotated[Optional[int], typer.Option(
        "--matmul-size", help="Side of the square matmul measuring the ceiling (default 8192 on cuda, 2048 on cpu).")] = None,
) -> Optional[dict]:
    """Speed benchmark of the Star Attention engine: phase 1, time to first token, decode, memory, FLOP/s."""
    try:
        settings = _settings(shape, model, lengths, modes, block_sizes, anchor_size, ranks, device, dtype, kernel,
                             question_tokens, decode_tokens, decode_warmup, repeats, pass_tokens, json_path, seed,
                             matmul_size, relays, decodes)
    except BenchError as exc:
        _fail(str(exc))
    inside_launcher = "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if inside_launcher and ranks > 1 and ranks != world:
        _fail(f"--ranks {ranks} but the launcher started {world} processes")
    if ranks > 1 and not inside_launcher:
        if settings.device == "cuda" and torch.cuda.device_count() < ranks:
            _fail(f"--ranks {ranks} needs {ranks} GPUs, {torch.cuda.device_count()} visible")
        try:
            plan_cells(settings, ranks)
        except BenchError as exc:
            _fail(str(exc))
        code = _relaunch(ranks, _argv(settings, ranks))
        if code:
            raise typer.Exit(code)
        return None
    try:
        plan_cells(settings, world)
    except BenchError as exc:
        _fail(str(exc))
    comm = init_comm(settings.device)
    try:
        log = (lambda line: typer.echo(f"[bench] {line}", err=True)) if comm.rank == 0 else (lambda line: None)
        try:
            report = run_bench(settings, comm, log)
        except BenchError as exc:
            _fail(str(exc))
    finally:
        comm.close()
    if report is None:
        return None
    typer.echo(f"# {report['device']} | torch {report['torch']} | transformers {report['transformers']} | "
               f"{report['model']['shape'] or report['model']['path']} {report['dtype']} | kernel {report['kernel']} | "
               f"matmul peak {report['matmul_peak_tflops']:.2f} TFLOP/s")
    typer.echo(format_table(report["cells"]))
    if settings.json_path:
        path = Path(settings.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _settings(shape, model, lengths, modes, block_sizes, anchor_size, ranks, device, dtype, kernel,
              question_tokens, decode_tokens, decode_warmup, repeats, pass_tokens, json_path, seed,
              matmul_size=None, relays=None, decodes="auto") -> BenchSettings:
    if model is not None and shape is not None:
        raise BenchError("give --shape or --model, not both")
    if model is not None and not Path(model).is_dir():
        raise BenchError(f"--model {model}: not a folder")
    shape = None if model is not None else (shape or "llama3-8b")
    if shape is not None and shape not in SHAPES:
        raise BenchError(f"unknown --shape {shape!r}: choose from {', '.join(SHAPES)}")
    for name, value, least in (("--ranks", ranks, 1), ("--question-tokens", question_tokens, 1),
                               ("--decode-tokens", decode_tokens, 1), ("--decode-warmup", decode_warmup, 0),
                               ("--repeats", repeats, 1), ("--pass-tokens", pass_tokens, 1),
                               ("--matmul-size", 1 if matmul_size is None else matmul_size, 1)):
        if value < least:
            raise BenchError(f"{name} must be at least {least}, got {value}")
    def lengths_of(option: str, text: Optional[str]) -> list[Optional[int]]:
        if not text:
            return [None]
        try:
            return parse_lengths(text)
        except BenchError as exc:
            raise BenchError(f"{option}: {exc}") from None

    length_list = lengths_of("--lengths", lengths)
    if length_list == [None]:
        raise BenchError("--lengths is empty")
    blocks = lengths_of("--block-sizes", block_sizes)
    anchors = lengths_of("--anchor-size", anchor_size)
    if len(anchors) != 1:
        raise BenchError("--anchor-size takes one value")
    relay_list = [None] if not relays else [0 if item.strip() == "0" else lengths_of("--relays", item)[0]
                                            for item in relays.split(",")]
    resolved_device = _resolve_device(device)
    dtype = dtype.lower()
    if dtype == "auto":
        dtype = str(pick_dtype(resolved_device, "auto")).removeprefix("torch.")
    if dtype not in DTYPES:
        raise BenchError(f"--dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    dtype = str(DTYPES[dtype]).removeprefix("torch.")
    try:
        resolve_kernel(kernel, resolved_device)
    except KernelError as exc:
        raise BenchError(f"--kernel: {exc}") from None
    decode_list = list(dict.fromkeys(d.strip().lower() for d in decodes.split(",") if d.strip()))
    if not decode_list:
        raise BenchError("--decodes is empty")
    try:
        for decode in decode_list:
            resolve_decode(decode, torch.device(resolved_device))
    except EngineError as exc:
        raise BenchError(f"--decodes: {exc}") from None
    return BenchSettings(
        lengths=length_list, modes=parse_modes(modes), block_sizes=list(dict.fromkeys(blocks)), anchor_size=anchors[0],
        relays=list(dict.fromkeys(relay_list)), decodes=decode_list, shape=shape, model_path=str(Path(model).resolve()) if model is not None else None, device=resolved_device,
        dtype=dtype, kernel=kernel, question_tokens=question_tokens, decode_tokens=decode_tokens,
        decode_warmup=decode_warmup, repeats=repeats, pass_tokens=pass_tokens, seed=seed,
        json_path=str(Path(json_path).resolve()) if json_path is not None else None, matmul_size=matmul_size,
    )


def _argv(settings: BenchSettings, ranks: int) -> list[str]:
    """The validated options as command-line arguments for the relaunched ranks."""
    args = ["--lengths", ",".join(map(str, settings.lengths)), "--modes", ",".join(settings.modes),
            "--ranks", str(ranks), "--device", settings.device, "--dtype", settings.dtype, "--kernel", settings.kernel,
            "--question-tokens", str(settings.question_tokens), "--decode-tokens", str(settings.decode_tokens),
            "--decode-warmup", str(settings.decode_warmup), "--repeats", str(settings.repeats),
            "--pass-tokens", str(settings.pass_tokens), "--seed", str(settings.seed)]
    args += ["--model", settings.model_path] if settings.model_path else ["--shape", settings.shape]
    if any(b is not None for b in settings.block_sizes):
        args += ["--block-sizes", ",".join(str(b) for b in settings.block_sizes if b is not None)]
    if settings.anchor_size is not None:
        args += ["--anchor-size", str(settings.anchor_size)]
    if settings.relays != [None]:
        args += ["--relays", ",".join(str(r) for r in settings.relays)]
    args += ["--decodes", ",".join(settings.decodes)]
    if settings.json_path:
        args += ["--json", settings.json_path]
    if settings.matmul_size:
        args += ["--matmul-size", str(settings.matmul_size)]
    return args


def main() -> None:
    typer.run(bench_command)


if __name__ == "__main__":
    main()
