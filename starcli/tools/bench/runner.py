"""One rank's part of a bench run: the model, then each cell's samples, gathered on rank 0."""

import copy
import datetime
import gc
import platform
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ...model.decode_weights import full_weights
from ...run.session import Session
from ...star import attention
from ...star.comm import Comm
from ...star.dims import ModelDims
from ...star.engine import resolve_decode
from .cells import (ENGINE_MODES, HF_MODES, SINGLE_PROCESS_MODES, WARMUP_LENGTH, BenchSettings, CellSpec,
                    command_line, plan_cells, warmup_spec)
from .table import fmt_value, cell_note
from .flops import GIB, estimate_cell_bytes, forward_parts, phase1_parts

# Matmul ceiling sizes: large enough to reach the device's peak, small enough to take seconds.
_MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}


# --- device helpers -------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _total_bytes(device: torch.device, ranks_here: int = 1) -> Optional[int]:
    """Memory a cell may use on one rank: the GPU's, or the host's available memory shared by the
    ranks on it (Linux; None where it cannot be read)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        return int(fields["MemAvailable"].split()[0]) * 1024 // ranks_here
    except (OSError, KeyError, ValueError):
        return None


# A cell estimated to take longer than this here is not started: its row says what it would cost.
MAX_CELL_SECONDS = 3600.0
# Tokens of the causal attention call timed for the estimate: long enough for the kernel's steady
# rate, short enough to cost a fraction of a second.
_ATTENTION_PROBE_TOKENS = {"cuda": 16384, "cpu": 2048}


def _cell_parts(spec: CellSpec, dims: ModelDims, question_tokens: int) -> list[tuple[int, int]]:
    """(matmul, attention) FLOPs of the cell's prompt per rank: transformers' one forward, or the
    engine's phase 1."""
    if spec.mode in HF_MODES:
        return [forward_parts(dims, spec.length + question_tokens)]
    return phase1_parts(dims, spec.partition)


def cell_seconds(spec: CellSpec, dims: ModelDims, question_tokens: int, matmul_rate: float, attention_rate: float) -> float:
    """What the cell's prompt should take on its slowest rank: its matmuls at the measured matmul
    rate, its attention at the measured attention rate (which a matmul peak alone would overstate
    many times on a CPU or with small heads)."""
    return max(linear / matmul_rate + attention / attention_rate
               for linear, attention in _cell_parts(spec, dims, question_tokens))


def cell_flops(spec: CellSpec, dims: ModelDims, question_tokens: int) -> list[int]:
    """FLOPs of the cell's prompt per rank."""
    return [linear + attention for linear, attention in _cell_parts(spec, dims, question_tokens)]


def measure_attention_rate(kernel: str, dims: ModelDims, device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of the engine's attention kernel in one causal call with the model's heads (median of 3)."""
    from ...star.kernels import attention_with_lse

    n = _ATTENTION_PROBE_TOKENS.get(device.type, 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, dims.q_heads, n, dims.head_dim, device=device, dtype=dtype, generator=gen)
    kv = torch.randn(2, dims.kv_heads, n, dims.head_dim, device=device, dtype=dtype, generator=gen)
    times = []
    for _ in range(4):
        _sync(device)
        start = time.perf_counter()
        attention_with_lse(q, kv[:1], kv[1:], causal=True, kernel=kernel)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 4 * dims.q_heads * dims.head_dim * (n * (n + 1) // 2) / statistics.median(times[1:])


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


# --- model ----------------------------------------------------------------------------------------
def open_session(settings: BenchSettings, comm: Comm, max_positions: int) -> Session:
    """The run's session: random weights of a shape (the same on every rank), or a model folder
    through the loader every command uses. No warm-up: the bench runs its own, per mode."""
    import copy

    from ...model.load import random_model
    from ...run.settings import RunSettings
    from .shapes import SHAPES

    options = dict(kernel=settings.kernel, pass_tokens=settings.pass_tokens, warm_up=False)
    if settings.model_path:
        run = RunSettings(dtype=settings.dtype, kernel=settings.kernel, pass_tokens=settings.pass_tokens)
        return Session.load(run, settings.model_path, comm, with_tokenizer=False, warm_up=False)
    config = copy.deepcopy(SHAPES[settings.shape])
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    model = random_model(config, device=comm.device, dtype=getattr(torch, settings.dtype), seed=settings.seed)
    return Session(model, None, comm, **options)


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
    def __init__(self, session: Session, comm: Comm, settings: BenchSettings, vocab: int):
        self.session = session
        self.engine = session.engine
        self.model = session.model
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
            encode, _ = self.session.encode(doc, spec.partition, question_ids=self.question)
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
            # a random model's greedy answer may loop: the guard would end it before the last timed token
            _, answer = self.session.answer(self.question, max_new_tokens=last, on_token=on_token, loop_guard=False)
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
            peak_bytes=self.session.peak_memory_bytes(),
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
            with torch.inference_mode(), full_weights(self.model):
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
                "peak_bytes": self.session.peak_memory_bytes()}

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
                "decode_ms_tok": (stamps[last] - stamps[first]) / decode_tokens * 1e3, "peak_bytes": self.session.peak_memory_bytes()}

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
    flops_per_rank = cell_flops(spec, dims, question_tokens)
    tokens = spec.length + question_tokens if spec.mode in HF_MODES else spec.length
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


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --- command line ---------------------------------------------------------------------------------


# --- the run --------------------------------------------------------------------------------------
def run_bench(settings: BenchSettings, comm: Comm, log: Callable[[str], None] = lambda line: None) -> Optional[dict]:
    """Run every cell on this rank; rank 0 returns the report (JSON-ready dict), other ranks None."""
    import transformers

    world = comm.world_size
    device = comm.device
    cells = plan_cells(settings, world)
    tail = settings.question_tokens + 1 + settings.decode_warmup + settings.decode_tokens
    session = open_session(settings, comm, max(settings.lengths) + tail + 1)
    model, engine = session.model, session.engine
    dims = ModelDims.from_config(model.config)
    dtype = getattr(torch, settings.dtype)
    dtype_bytes = torch.tensor([], dtype=dtype).element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    runner = _Runner(session, comm, settings, model.config.vocab_size)

    matmul_size = settings.matmul_size or _MATMUL_SIZE.get(device.type, 2048)
    peak = measure_matmul_peak(device, dtype, matmul_size)
    attention_rate = measure_attention_rate(engine.kernel, dims, device, dtype)
    rates = comm.gather_objects((peak, attention_rate), dst=0)
    log(f"matmul peak {peak / 1e12:.2f} TFLOP/s ({settings.dtype}); attention {attention_rate / 1e12:.3f} TFLOP/s; "
        f"kernel {engine.kernel}; {world} rank(s)")

    # warm kernels and the allocator once per mode, untimed
    warm_length = min(min(settings.lengths), WARMUP_LENGTH)
    for mode in settings.modes:
        if mode in SINGLE_PROCESS_MODES and world > 1:
            continue
        for decode in settings.decodes if mode in ENGINE_MODES else [None]:
            runner.sample(warmup_spec(mode, warm_length, world, decode), decode_warmup=1, decode_tokens=1)

    def estimate(spec: CellSpec, rank: int) -> int:
        return estimate_cell_bytes(dims, spec.partition, rank, dtype_bytes=dtype_bytes, weight_bytes=weight_bytes,
                                   pass_tokens=settings.pass_tokens, tail_tokens=tail,
                                   hf_tokens=spec.length + settings.question_tokens)

    # rank 0's figures, so that every rank skips the same cells (their collectives must pair up)
    capacity = comm.broadcast_int(_total_bytes(device, 1 if device.type == "cuda" else world) or 0, src=0)
    # the slowest rank's rates, from rank 0 so that every rank skips the same cells
    slowest = comm.broadcast_int(int(min(r[0] for r in rates) if comm.rank == 0 else 0), src=0) or peak
    slowest_attention = comm.broadcast_int(int(min(r[1] for r in rates) if comm.rank == 0 else 0), src=0) or attention_rate
    unit = "GPU" if device.type == "cuda" else "rank"
    results = []
    for spec in cells:
        samples: list[dict] = []
        if capacity and not spec.skip_reason:
            # a cell that cannot fit would only fail after minutes of compute: report its need instead
            need = max(estimate(spec, r) for r in range(world if spec.partition else 1))
            if need > capacity:
                spec = copy.copy(spec)
                spec.skip_reason = (f"does not fit: needs ~{need / GIB:.1f} GiB per {unit}, "
                                    f"the {unit} has {capacity / GIB:.1f} GiB")
                spec.estimated_need = need
        if not spec.skip_reason:
            seconds = cell_seconds(spec, dims, settings.question_tokens, slowest, slowest_attention)
            if seconds > MAX_CELL_SECONDS:
                spec = copy.copy(spec)
                spec.skip_reason = (f"too slow here: about {seconds / 3600:.1f} h at the rates measured on this device "
                                    f"(matmul {slowest / 1e12:.2f}, attention {slowest_attention / 1e12:.3f} TFLOP/s)")
            else:
                log(f"{spec.mode} {spec.length}: starting (about {seconds:.0f} s at the measured rates)")
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
            log(f"{cell['mode']} {cell['length']} block {fmt_value(cell['block'])}: "
                + (f"ttft {cell['ttft_s']:.4g} s" if cell["status"] == "ok" else cell_note(cell)))
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
        "command": command_line(),
        "options": asdict(settings),
        "model": {"shape": None if settings.model_path else settings.shape, "path": settings.model_path,
                  "model_type": model.config.model_type, "linear_params": dims.linear_params, **asdict(dims),
                  "weight_gib": weight_bytes / GIB},
        "dtype": settings.dtype,
        "kernel": engine.kernel,
        "world_size": world,
        "matmul_peak_tflops": peak / 1e12,
        "matmul_peak_tflops_per_rank": [r[0] / 1e12 for r in rates],
        "attention_tflops_per_rank": [r[1] / 1e12 for r in rates],
        "matmul": {"size": matmul_size, "dtype": settings.dtype},
        "memory_measure": ("torch.cuda.max_memory_allocated per cell, weights included" if device.type == "cuda"
                           else "process peak RSS (lifetime high-water mark, not reset per cell)"),
        "flops_note": ("phase 1 only: 2·P·tokens (P = decoder matmul weights from the config) + "
                       "4·L·Hq·d per (query, key) score entry of the method's mask; TFLOP/s = sum over "
                       "ranks / slowest rank's time; %peak = per-rank share / matmul peak"),
        "cells": results,
    }

