"""Phase 1 (encode the document) and phase 2 (question, then token-by-token answer).

The engine knows token ids, not text: prompt building and detokenisation live elsewhere. It runs an
unmodified transformers causal LM loaded with ``attn_implementation="star"`` and drives it with
explicit position ids and ``use_cache=False``; the KV it needs is kept in ``AttentionState``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import RunError
from . import attention, split_kv
from .attention import AttentionState, BlocksStep, DenseChunkStep, GenerateStep, RingStep
from .comm import Comm
from .dims import ModelDims
from .graphs import DecodeStep
from .kernels import resolve_kernel
from .partition import DEFAULT_PASS_TOKENS, Partition, pass_size, plan_dense, plan_star
from .probe import config_refusal, probe_attention
from .sampling import Sampler, SamplingParams, repeating_tail

# How phase 2 decodes: "graph" replays the fixed-shape one-token step as a CUDA graph (the fast
# path on CUDA); "static" runs that same fixed-shape step without capture (what the graph
# replays, checkable on any device); "eager" grows the tail step by step, launching every kernel
# from Python (the reference, and the CPU path). "auto" is "graph" on CUDA, "eager" elsewhere.
DECODE_MODES = ("auto", "graph", "static", "eager")
# the decode mode an answer reports when its step could not be captured and ran eagerly instead
CAPTURE_FAILED = "static, graph capture failed"
# The fixed-shape tail is allocated in multiples of this many tokens, so questions of similar
# length and answer budget reuse one capture.
_TAIL_QUANTUM = 1024
# Document tokens of the warm-up run: the same kernels as a real document, in a fraction of a second.
_WARMUP_TOKENS = 2048
_WARMED_DEVICES: set[torch.device] = set()


class EngineError(RunError):
    pass


class EncodeStats:
    """Phase 1 on this rank. On CUDA its ``seconds`` come from events recorded around it and are
    waited for only when read, so that the question's prefill is queued while the GPU still runs
    phase 1 (its launches then cost no time of their own)."""

    def __init__(self, seconds: float = 0.0, tokens: int = 0, anchor_tokens: int = 0, blocks: int = 0,
                 passes: int = 0):
        self.tokens = tokens  # document tokens whose KV this rank keeps
        self.anchor_tokens = anchor_tokens  # anchor KV tokens this rank received from rank 0 (it never encodes them)
        self.blocks = blocks
        self.passes = passes
        self.started = 0.0  # time.perf_counter() when phase 1 began (0: no phase 1 ran here)
        self._seconds = seconds
        self._events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None

    @property
    def seconds(self) -> float:
        if self._events is not None:
            start, end = self._events
            end.synchronize()
            self._seconds, self._events = start.elapsed_time(end) / 1e3, None
        return self._seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self._seconds, self._events = value, None

    def start_clock(self, device: torch.device) -> Callable[[], None]:
        """Start timing phase 1 (after the device is idle); returns the function that ends it."""
        self.started = time.perf_counter()
        if device.type != "cuda":
            return lambda: setattr(self, "seconds", time.perf_counter() - self.started)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()

        def stop() -> None:
            end.record()
            self._events = (start, end)

        return stop


@dataclass
class AnswerStats:
    question_tokens: int = 0
    prefill_seconds: float = 0.0  # question prefill through the first chosen token
    decode_seconds: float = 0.0  # after the first token, capture excluded
    decode_tokens: int = 0  # tokens generated after the first
    capture_seconds: float = 0.0  # capturing the decode step's CUDA graph (0 when reused or eager)
    decode_mode: str = ""  # graph, static or eager
    stop_reason: str = ""


@dataclass
class EngineRun:
    """The document's KV on this rank plus bookkeeping for one or more answers."""

    partition: Partition
    encode: EncodeStats = field(default_factory=EncodeStats)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StarEngine:
    def __init__(self, model, comm: Comm | None = None, kernel: str = "auto", pass_tokens: int = DEFAULT_PASS_TOKENS,
                 decode: str = "auto"):
        attention.register()
        reason = config_refusal(model.config, type(model))
        if reason:
            raise EngineError(reason)
        if model.config._attn_implementation != attention.ATTENTION_NAME:
            raise EngineError(f"load the model with attn_implementation={attention.ATTENTION_NAME!r}")
        self.layer_shapes, reason = probe_attention(model)
        if reason:
            raise EngineError(reason)
        self.model = model
        self.device = next(model.parameters()).device
        self.comm = comm or Comm(device=self.device)
        self.kernel = resolve_kernel(kernel, self.device)
        self.pass_tokens = pass_tokens
        self._activation_bytes = _activation_bytes_per_token(model)
        self.decode = resolve_decode(decode, self.device)
        self.run: EngineRun | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the document and any captured step (their buffers are freed with them)."""
        self.state = AttentionState(self.comm, self.kernel)
        # the eager reference uses the same kernels, so it differs from the graph by capture alone
        self.state.split_kv = split_kv.available(self.device)
        self.run = None
        self._decode_step: DecodeStep | None = None
        # (question ids, logits of its last token) when phase 1 ran the first question along
        self._encoded_question: tuple[list[int], torch.Tensor] | None = None
        self.history = 0  # question/answer tokens after the document (same on every rank)
        self.unfed: list[int] = []  # an answer's last token, chosen but not yet run through the model

    def warm_up(self, tokens: int = _WARMUP_TOKENS) -> float:
        """CUDA: run a small random document and a short answer through phase 1 and 2, so that the
        process's one-time setup (library handles, lazily loaded kernels, Triton compilation, the
        graph machinery) is not paid inside the user's first document. Every rank must call it.
        Returns the seconds it took (0 on the CPU, which has no such setup, and once done in this process)."""
        if self.device.type != "cuda" or self.device in _WARMED_DEVICES:
            return 0.0
        _WARMED_DEVICES.add(self.device)
        start = time.perf_counter()
        ids = torch.randint(0, self.model.config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(0))
        self.encode_context(ids, plan_star(tokens, self.comm.world_size))
        self.answer(ids[:8].tolist(), max_new_tokens=3)
        self.reset()
        self.history, self.unfed = 0, []
        _sync(self.device)
        return time.perf_counter() - start

    # --- forward ---------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, step, want_logits: bool) -> torch.Tensor | None:
        self.state.step = step
        kwargs = dict(input_ids=ids[None], position_ids=positions[None], use_cache=False, star_state=self.state)
        try:
            with torch.inference_mode():
                if want_logits:
                    return self.model(**kwargs, logits_to_keep=1).logits[0, -1]
                # the base model only: no logits are ever computed for document tokens
                self.model.base_model(**kwargs)
                return None
        finally:
            self.state.step = None

    # --- phase 1 ---------------------------------------------------------------------------------
    def encode_context(
        self, doc_ids: torch.Tensor, partition: Partition, on_progress: Callable[[int, int], None] | None = None,
        question_ids: list[int] | None = None,
    ) -> EncodeStats:
        """Encode this rank's share of ``doc_ids`` (N,) per ``partition``; keeps its KV for phase 2.

        With ``question_ids`` and dense attention on one rank the first question rides in the
        document's last pass, as in one forward over document + question: the first ``answer`` of
        exactly those ids starts from that pass's logits instead of a second, launch-bound forward.
        The document's KV is the same either way (the question comes after it)."""
        if doc_ids.numel() != partition.num_tokens:
            raise EngineError(f"partition is for {partition.num_tokens} tokens, got {doc_ids.numel()}")
        self.reset()
        self.history, self.unfed = 0, []
        doc_ids = doc_ids.to(self.device)
        plan = partition.ranks[self.comm.rank]
        stats = EncodeStats(tokens=plan.num_tokens, blocks=len(plan.blocks))
        self.state.document.capacity = plan.num_tokens
        self._place_document(partition)
        _sync(self.device)
        stop = stats.start_clock(self.device)
        if partition.attention == "star":
            self._encode_star(doc_ids, partition, stats, on_progress)
        elif partition.attention == "dense":
            self._encode_dense(doc_ids, partition, stats, on_progress,
                               question_ids if self.comm.world_size == 1 else None)
        elif partition.attention == "ring":
            self._encode_ring(doc_ids, partition, stats, on_progress)
        else:
            raise EngineError(f"unknown attention {partition.attention!r}")
        self.state.anchor = attention.KVBuffer(0)  # the anchor's KV is only needed in phase 1
        stop()  # not waited for: the first question's prefill is queued behind it
        self.run = EngineRun(partition, stats)
        return stats

    def _place_document(self, partition: Partition) -> None:
        """Where this rank's document KV sits in the document (windows and chunks mask by position)."""
        blocks = partition.ranks[self.comm.rank].blocks
        ranges = [(b.start, b.end) for b in blocks] or [(0, 0)]
        if partition.attention != "ring":  # star and dense ranks hold one contiguous stretch
            ranges = [(ranges[0][0], ranges[-1][1])]
        self.state.document_ranges = ranges
        self.state.total_tokens = partition.num_tokens

    def _positions(self, start: int, end: int) -> torch.Tensor:
        return torch.arange(start, end, device=self.device)

    def _encode_star(self, doc_ids, partition: Partition, stats: EncodeStats, on_progress) -> None:
        plan = partition.ranks[self.comm.rank]
        anchor = partition.anchor_size
        self.state.anchor_in_document = bool(plan.blocks) and plan.blocks[0].index == 0
        if plan.needs_anchor:
            stats.anchor_tokens = anchor  # arrives layer by layer during the first pass
        if not plan.blocks and self.comm.distributed:
            self._join_anchor_broadcast(anchor)
        done = 0
        handover = partition.relay and self.comm.distributed
        # with relay over several ranks a rank's first block waits for the previous rank's last one,
        # layer by layer: one pass per rank, or a rank would wait on a later pass of its neighbour
        # while that neighbour waits for it in an anchor broadcast of an earlier one
        passes = ([list(plan.blocks)] if handover and plan.blocks
                  else _passes(list(plan.blocks), self._pass_tokens(plan.num_tokens)))
        ranks = partition.ranks
        rank = self.comm.rank
        to_next = ranks[rank + 1].blocks[0].relay if handover and rank + 1 < len(ranks) and ranks[rank + 1].blocks else 0
        from_previous = plan.blocks[0].relay if handover and plan.blocks and plan.blocks[0].index > 0 else 0
        for group in passes:
            ids, positions = doc_ids[group[0].start : group[-1].end], self._positions(group[0].start, group[-1].end)
            step = BlocksStep([b.length for b in group], starts_with_block0=group[0].index == 0, anchor_size=anchor,
                              relays=[b.relay for b in group], relay_to_next_rank=to_next, relay_from_previous_rank=from_previous)
            self._forward(ids, positions, step, want_logits=False)
            self.state.document.filled += sum(b.length for b in group)
            done += len(group)
            stats.passes += 1
            if on_progress:
                on_progress(done, len(plan.blocks))

    def _pass_tokens(self, tokens: int) -> int:
        """Most tokens in one phase-1 pass (``partition.pass_size``): on a GPU all of them where
        free memory allows. On the CPU passes stay at ``pass_tokens``: there they bound the
        resident memory, and a pass there is long enough that the merges cost nothing."""
        if self.device.type != "cuda" or not self._activation_bytes:
            return self.pass_tokens
        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        kv = self.model.dtype.itemsize * sum(s.heads * (s.key_dim + s.value_dim) for s in self.layer_shapes.values())
        return pass_size(tokens, self.pass_tokens, self._activation_bytes, kv, free)

    def _join_anchor_broadcast(self, anchor: int) -> None:
        """A rank with no blocks (more ranks than blocks) still takes part in rank 0's per-layer
        anchor broadcasts, which are collectives over every rank."""
        for layer, shape in self.layer_shapes.items():
            like = torch.empty(1, shape.heads, 0, shape.key_dim, dtype=self.model.dtype, device=self.device)
            like_values = torch.empty(1, shape.heads, 0, shape.value_dim, dtype=self.model.dtype, device=self.device)
            self.state.receive_anchor(layer, like, anchor, like_values)

    def _encode_dense(self, doc_ids, partition: Partition, stats: EncodeStats, on_progress,
                      question_ids: list[int] | None = None) -> None:
        tokens = partition.num_tokens + len(question_ids or ())
        chunks = plan_dense(partition.num_tokens, self._pass_tokens(tokens)).ranks[0].blocks
        for i, chunk in enumerate(chunks):
            ids, extra = doc_ids[chunk.start : chunk.end], 0
            if question_ids and i == len(chunks) - 1:
                extra = len(question_ids)
                ids = torch.cat([ids, torch.tensor(question_ids, dtype=ids.dtype).to(self.device, non_blocking=True)])
                self.state.question = attention.KVBuffer(extra)
            logits = self._forward(ids, self._positions(chunk.start, chunk.end + extra), DenseChunkStep(extra), extra > 0)
            if extra:
                self._encoded_question = (list(question_ids), logits)
            self.state.document.filled += chunk.length
            stats.passes += 1
            if on_progress:
                on_progress(i + 1, len(chunks))

    def _encode_ring(self, doc_ids, partition: Partition, stats: EncodeStats, on_progress) -> None:
        plan = partition.ranks[self.comm.rank]
        local = [(b.start, b.end) for b in plan.blocks]
        everyone = [[(b.start, b.end) for b in r.blocks] for r in partition.ranks]
        ids = torch.cat([doc_ids[s:e] for s, e in local])
        positions = torch.cat([self._positions(s, e) for s, e in local])
        self._forward(ids, positions, RingStep(local, everyone, partition.num_tokens), want_logits=False)
        self.state.document.filled = plan.num_tokens
        stats.passes = 1
        if on_progress:
            on_progress(len(plan.blocks), len(plan.blocks))

    # --- phase 2 ---------------------------------------------------------------------------------
    def _step(self, ids: list[int], position: int) -> torch.Tensor:
        tensor = torch.tensor(ids, dtype=torch.long)
        if self.device.type == "cuda":
            # from pageable memory the copy would wait for the GPU to finish phase 1
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        positions = self._positions(position, position + len(ids))
        logits = self._forward(tensor, positions, GenerateStep(positions=positions, query_start=position), want_logits=True)
        if self.comm.is_last:
            self.state.tail.filled += len(ids)
        return logits

    def _tail_from_phase_one(self) -> None:
        """The question phase 1 encoded: its KV into the tail, where a prefill would have put it."""
        question = self.state.question
        for layer in question.keys:
            self.state.tail.write(layer, question.keys[layer], question.values[layer], 0)
        self.state.tail.filled += question.capacity
        self.state.question = attention.KVBuffer(0)

    def _choose(self, logits: torch.Tensor, sampler: Sampler) -> int:
        # the last rank decides and broadcasts, so ranks can never diverge on sampled tokens
        token = sampler.choose(logits) if self.comm.is_last else -1
        return self.comm.broadcast_int(token, src=self.comm.world_size - 1)

    def answer(
        self,
        question_ids: list[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams = SamplingParams(),
        stop_token_ids: set[int] = frozenset(),
        on_token: Callable[[int], bool] | None = None,
        keep_history: bool = False,
        loop_guard: bool = True,
    ) -> tuple[list[int], AnswerStats]:
        """Phase 2: prefill ``question_ids`` after the document, then generate.

        ``on_token(token) -> bool`` sees each generated token (not stop tokens); returning True
        stops (e.g. a stop string was completed). By default each call starts from the encoded
        document alone, so several questions can be answered against one encoding. With
        ``keep_history`` the call continues after the previous answer (a follow-up turn): earlier
        questions and answers stay in the last rank's tail KV. ``loop_guard`` stops an answer whose
        end repeats itself (``sampling.repeating_tail``); the bench turns it off to time a fixed
        number of tokens.
        """
        if self.run is None:
            raise EngineError("encode_context must run before answer")
        if not question_ids:
            raise EngineError("the question is empty")
        if max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if keep_history:
            question_ids = self.unfed + list(question_ids)  # the last answer token was never fed
        else:
            self.history = 0
        self.unfed = []
        stats = AnswerStats(question_tokens=len(question_ids), decode_mode=self.decode)
        self._reserve_tail(self.history, len(question_ids) + max_new_tokens)
        step_one = self._one_token_step()
        sampler = Sampler(sampling, self.device)
        position = self.run.partition.num_tokens + self.history
        self.history += len(question_ids)
        start = time.perf_counter()
        encoded, self._encoded_question = self._encoded_question, None
        if encoded is not None and encoded[0] == question_ids and position == self.run.partition.num_tokens:
            self._tail_from_phase_one()
            logits = encoded[1]
        else:
            logits = self._step(question_ids, position)
        position += len(question_ids)
        token = self._choose(logits, sampler)
        # the prefill was queued while phase 1 may still have been running: it began when both had
        encode = self.run.encode
        stats.prefill_seconds = time.perf_counter() - max(start, encode.started + encode.seconds)
        tokens: list[int] = []
        capture_before = step_one.capture_seconds if step_one else 0.0
        decode_start = time.perf_counter()
        while True:
            if token in stop_token_ids:
                stats.stop_reason = "end of turn"
                break
            tokens.append(token)
            if on_token and on_token(token):
                stats.stop_reason = "stop string"
                break
            if len(tokens) >= max_new_tokens:
                stats.stop_reason = "max new tokens"
                break
            if loop_guard and repeating_tail(tokens):
                stats.stop_reason = "repetition"
                break
            logits = step_one(token, position, self.state.tail.filled) if step_one else self._step([token], position)
            if step_one and self.comm.is_last:
                self.state.tail.filled += 1
            position += 1
            self.history += 1
            token = self._choose(logits, sampler)
        if stats.stop_reason != "end of turn":
            self.unfed = [tokens[-1]]
        if step_one:
            stats.capture_seconds = step_one.capture_seconds - capture_before
            if step_one.capture_failure and self.decode == "graph":
                # not tried again for later answers: the model stays as it is
                self.decode = "static"
                stats.decode_mode = CAPTURE_FAILED
        stats.decode_seconds = time.perf_counter() - decode_start - stats.capture_seconds
        stats.decode_tokens = max(0, len(tokens) - 1)
        return tokens, stats

    def _reserve_tail(self, keep: int, extra: int) -> None:
        """A tail buffer with room for ``extra`` more tokens after its first ``keep``; the current one
        while it is large enough (a captured step keeps pointing at it)."""
        if not self.comm.is_last:
            return
        old = self.state.tail
        if old.capacity < keep + extra:
            fixed = self.decode != "eager"
            # fixed shapes: every layer allocated at once, in quanta, so similar questions share a capture
            tail = attention.KVBuffer(-(-(keep + extra) // _TAIL_QUANTUM) * _TAIL_QUANTUM if fixed else keep + extra)
            if fixed:
                tail.allocate(self.layer_shapes, self.model.dtype, self.device)
            for layer in old.keys if keep else ():
                tail.write(layer, old.keys[layer][:, :, :keep], old.values[layer][:, :, :keep], 0)
            self.state.tail = tail
            self._decode_step = None
        self.state.tail.filled = keep

    def _one_token_step(self) -> DecodeStep | None:
        """The fixed-shape decoding step for the current document and tail (None when eager)."""
        if self.decode == "eager":
            return None
        if self._decode_step is None:
            def forward(ids, positions, step):
                return self._forward(ids, positions, step, want_logits=True)

            self._decode_step = DecodeStep(forward, self.device, capture=self.decode == "graph")
        return self._decode_step

    def export_document_kv(self) -> dict[str, torch.Tensor]:
        """This rank's document KV by layer: ``k.{layer}``/``v.{layer}`` of shape (1, Hkv, tokens, D)."""
        out = {}
        for layer in self.state.document.keys:
            k, v = self.state.document.read(layer)
            out[f"k.{layer}"], out[f"v.{layer}"] = k, v
        return out

    def import_document_kv(self, tensors: dict[str, torch.Tensor], partition: Partition, encode: EncodeStats) -> None:
        """Install KV saved by ``export_document_kv`` for ``partition`` instead of running phase 1."""
        plan = partition.ranks[self.comm.rank]
        self.reset()
        self.state.document.capacity = plan.num_tokens
        for name, tensor in tensors.items():
            kind, layer = name.split(".")
            target = self.state.document.keys if kind == "k" else self.state.document.values
            target[int(layer)] = tensor.to(self.device)
            if tensor.shape[2] != plan.num_tokens:
                raise EngineError(f"cached KV holds {tensor.shape[2]} tokens, this rank needs {plan.num_tokens}")
        self.state.document.filled = plan.num_tokens
        self._place_document(partition)
        self.run = EngineRun(partition, encode)


def resolve_decode(name: str, device: torch.device) -> str:
    """``auto`` -> graph on CUDA, eager elsewhere; ``graph`` needs CUDA."""
    if name not in DECODE_MODES:
        raise EngineError(f"unknown decode mode {name!r}: choose one of {', '.join(DECODE_MODES)}")
    if name == "auto":
        return "graph" if device.type == "cuda" else "eager"
    if name == "graph" and device.type != "cuda":
        raise EngineError("decode mode graph needs a CUDA device")
    return name


def _activation_bytes_per_token(model) -> int | None:
    """A forward's live activations per token, from the config (None where its sizes are not the
    usual ones: such a model keeps passes of ``pass_tokens``)."""
    try:
        dims = ModelDims.from_config(model.config.get_text_config())
        return dims.activation_per_token * model.dtype.itemsize
    except (AttributeError, TypeError):
        return None


def _passes(blocks: list, pass_tokens: int) -> list[list]:
    """Group consecutive blocks into passes of at most ``pass_tokens`` tokens (≥ one block each)."""
    groups: list[list] = []
    for block in blocks:
        if groups and sum(b.length for b in groups[-1]) + block.length <= pass_tokens:
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups
