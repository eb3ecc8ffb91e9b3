"""A session: one model loaded on this rank and the document it holds.

Every command runs documents through a ``Session``: ``ask`` and ``summarize`` on each rank
(``starcli.run.rank``), ``chat`` across its turns, ``starcli eval`` over its samples and
``starcli bench`` over its cells. The steps are always the same: load (``Session.load``, or a
model built elsewhere, such as the bench's random weights) → ``plan`` the partition → ``encode``
the document (phase 1, or its verified KV from the document cache) → ``answer`` as many questions
as asked, each starting from the encoded document or, for a follow-up, after the previous answer.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import events
from ..errors import Cancelled, one_line
from ..events import Emit
from ..ingest.prompt import stop_token_ids
from ..star.comm import Comm
from ..star.decode_threads import tuned_decode_threads
from ..star.engine import AnswerStats, EncodeStats, StarEngine
from ..star.partition import DEFAULT_PASS_TOKENS, Partition, plan_partition
from ..star.sampling import SamplingParams
from .memory import DocumentMemory, Held
from .settings import RunSettings
from .textstream import TextStream


@dataclass(frozen=True)
class CacheIdentity:
    """What the document cache keys an encoding on besides the tokens and the partition."""

    model_path: str
    rope_scaling: str | None = None
    sources: tuple[str, ...] = ()  # the parts' paths, shown by `cache ls`


def _int8_decode(model, folder: str | None) -> bool:
    """CPU decoding in bfloat16 reads int8 copies of the weights (``model.decode_weights``): decode
    is bound by the bytes it reads there. float32 stays the exact reference, and GPUs decode from
    the weights themselves."""
    from ..model import decode_weights

    if model.device.type != "cpu" or model.dtype != torch.bfloat16 or not decode_weights.available():
        return False
    decode_weights.int8_for_decode(model, folder)
    return True  # every linear layer has its copy now, whether made here or by an earlier session


class Session:
    def __init__(self, model, tokenizer, comm: Comm, *, kernel: str = "auto", pass_tokens: int = DEFAULT_PASS_TOKENS,
                 eager: bool = False, warm_up: bool = True, load_seconds: float = 0.0, model_path: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.comm = comm
        start = time.perf_counter()
        self.int8_decode = _int8_decode(model, model_path)
        self.engine = StarEngine(model, comm, kernel=kernel, pass_tokens=pass_tokens, decode="eager" if eager else "auto")
        self.load_seconds = load_seconds + time.perf_counter() - start  # the int8 copies are part of loading
        # once per process: a later session in the same process finds it done (0 s)
        self.warmup_seconds = self.engine.warm_up() if warm_up else 0.0
        self.stops = stop_token_ids(tokenizer, model.config) if tokenizer is not None else set()
        self.dtype_name = str(model.dtype).removeprefix("torch.")

    @classmethod
    def load(cls, settings: RunSettings, model_path: str, comm: Comm, tokenizer=None, *, with_tokenizer: bool = True,
             warm_up: bool = True) -> "Session":
        """The model of a resolved folder on this rank's device, with the star attention function
        registered; ``tokenizer``: one the caller already loaded from the same folder (none at all
        without ``with_tokenizer``: the bench's folders need not have one)."""
        from ..model.dtypes import pick_dtype
        from ..model.load import load_model
        from ..model.spec import ModelSpec
        from ..star import attention

        attention.register()
        start = time.perf_counter()
        spec = ModelSpec(name=os.path.basename(model_path), kind="directory", path=Path(model_path))
        model, tokenizer = load_model(
            spec, device=str(comm.device), dtype=pick_dtype(comm.device.type, settings.dtype),
            attn_implementation=attention.ATTENTION_NAME, trust_remote_code=settings.trust_remote_code,
            allow_pickle=settings.allow_pickle, rope_scaling=settings.rope_scaling, tokenizer=tokenizer,
            with_tokenizer=with_tokenizer,
        )
        return cls(model, tokenizer, comm, kernel=settings.kernel, pass_tokens=settings.pass_tokens,
                   eager=settings.eager, warm_up=warm_up, load_seconds=time.perf_counter() - start, model_path=model_path)

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def plan(self, num_tokens: int, attention: str = "auto", block_size: int | None = None,
             anchor_size: int | None = None, relay: int | None = None) -> Partition:
        return plan_partition(attention, num_tokens, self.comm.world_size, block_size, anchor_size, relay=relay,
                              device_type=self.device.type)

    def encode(self, document_ids: list[int] | torch.Tensor, partition: Partition,
               on_progress: Callable[[int, int], None] | None = None, *, cache: CacheIdentity | None = None,
               memory: DocumentMemory | None = None, emit: Emit | None = None,
               question_ids: list[int] | None = None) -> tuple[EncodeStats, dict | None]:
        """Phase 1 of ``document_ids`` under ``partition``. Each rank's KV comes, when every rank
        finds its share, from ``memory`` (documents a server keeps encoded), else with ``cache``
        from the document cache on disk; it is stored in both when encoded here. Returns the
        encoding's statistics and, with ``cache`` or ``memory``, what they did. ``question_ids``:
        the first question, encoded along where phase 1 runs here (``StarEngine.encode_context``)."""
        ids = document_ids if isinstance(document_ids, torch.Tensor) else torch.tensor(document_ids, dtype=torch.long)
        if cache is None and memory is None:
            return self.engine.encode_context(ids, partition, on_progress, question_ids), None
        id_list = ids.tolist()
        stats, info = None, {"hit": False}
        if memory is not None:
            # the model is this session's: the key needs no identity of it
            memory_key = self._cache_key(None, id_list, partition).digest()
            stats, info = self._load_held(memory.get(memory_key), partition)
        if stats is None and cache is not None:
            from ..cache import documents

            key = self._cache_key(cache, id_list, partition)
            stats, info = self._load_cached(key, partition, emit or events.discard)
            if stats is None:
                stats = self.engine.encode_context(ids, partition, on_progress, question_ids)
                try:
                    documents.save(key, self.engine.export_document_kv(), stats.seconds, list(cache.sources))
                except Exception as exc:  # noqa: BLE001 - the cache only saves time: the answer goes on
                    (emit or events.discard)(events.Note(
                        f"could not store the encoded document in the cache ({one_line(exc)}); answering without it",
                        warning=True))
        if stats is None:
            stats = self.engine.encode_context(ids, partition, on_progress, question_ids)
        if memory is not None and not info.get("memory"):
            memory.put(memory_key, self.engine.export_document_kv(), len(id_list),
                       stats.seconds + info.get("saved_s", 0.0))
        return stats, info

    def answer(self, question_ids: list[int], *, max_new_tokens: int, sampling: SamplingParams = SamplingParams(),
               on_token: Callable[[int], bool] | None = None, keep_history: bool = False,
               loop_guard: bool = True) -> tuple[list[int], AnswerStats]:
        """Phase 2 of one question (``StarEngine.answer``), on the CPU with the decode thread count
        chosen by timing the steps."""
        with tuned_decode_threads(self.device, on_token or (lambda token: False)) as decode_on_token:
            return self.engine.answer(question_ids, max_new_tokens=max_new_tokens, sampling=sampling,
                                      stop_token_ids=self.stops, on_token=decode_on_token, keep_history=keep_history,
                                      loop_guard=loop_guard)

    def stream(self, question_ids: list[int], settings: RunSettings, emit: Emit, keep_history: bool = False,
               cancelled: Callable[[], bool] | None = None) -> tuple[list[int], AnswerStats, str]:
        """Answer one question, emitting UTF-8-safe text deltas as ``token`` events; stops at a
        stop string, and raises ``Cancelled`` on every rank once ``cancelled()`` is true on any
        (a server's client went away). Returns (token ids, AnswerStats, the answer text)."""
        stream = TextStream(self.tokenizer, settings.stop)
        parts: list[str] = []
        generated = 0

        def emit_text(delta: str) -> None:
            if delta:
                parts.append(delta)
                emit(events.Token(delta))

        def on_token(token: int) -> bool:
            nonlocal generated
            emit_text(stream.feed(token))
            generated += 1
            if cancelled is not None and generated % self._cancel_every == 0:
                self.check_cancelled(cancelled)
            return stream.stopped

        tokens, stats = self.answer(question_ids, max_new_tokens=settings.max_new_tokens, sampling=settings.sampling(),
                                    on_token=on_token, keep_history=keep_history)
        emit_text(stream.flush())
        return tokens, stats, "".join(parts)

    @property
    def _cancel_every(self) -> int:
        # across ranks the check is a collective: once every few tokens costs nothing measurable
        return 4 if self.comm.distributed else 1

    def check_cancelled(self, cancelled: Callable[[], bool]) -> None:
        """Raise ``Cancelled`` on every rank when ``cancelled()`` is true on any; every rank must
        call it at the same point (it is a collective across ranks)."""
        if not self.comm.all_true(not cancelled()):
            raise Cancelled("the request was cancelled")

    def peak_memory_bytes(self) -> int:
        """Peak GPU memory on CUDA, else the process's peak resident set size."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def _cache_key(self, cache: CacheIdentity | None, ids: list[int], partition: Partition):
        """The key of a document's encoding on this rank; ``cache`` None: in this session's memory,
        where the model is always this session's."""
        from ..cache import documents

        if cache is None:
            model = "this session"
        else:
            identity = documents.model_identity(cache.model_path)
            # a stretched rotary embedding gives other KV for the same weights
            model = f"{identity}+rope:{cache.rope_scaling}" if cache.rope_scaling else identity
        return documents.EntryKey(
            model=model,
            tokens_sha256=documents.tokens_digest(ids),
            num_tokens=len(ids),
            attention=partition.attention,
            block_size=partition.block_size,
            anchor_size=partition.anchor_size,
            relay=str(partition.relay),
            dtype=self.dtype_name,
            world_size=self.comm.world_size,
            rank=self.comm.rank,
        )

    def _load_held(self, held: Held | None, partition: Partition) -> tuple[EncodeStats | None, dict]:
        """(EncodeStats, info) from a document this session holds in memory, when every rank holds
        its share; (None, info) otherwise."""
        if not self.comm.all_true(held is not None):
            return None, {"hit": False}
        start = time.perf_counter()
        plan = partition.ranks[self.comm.rank]
        stats = EncodeStats(seconds=0.0, tokens=plan.num_tokens, blocks=len(plan.blocks))
        self.engine.import_document_kv(held.tensors, partition, stats)
        stats.seconds = time.perf_counter() - start
        return stats, {"hit": True, "memory": True, "load_s": stats.seconds,
                       "saved_s": max(0.0, held.encode_seconds - stats.seconds)}

    def _load_cached(self, key, partition: Partition, emit: Emit) -> tuple[EncodeStats | None, dict]:
        """(EncodeStats, info) when every rank has its entry; (None, info) to encode instead."""
        from ..cache import documents

        start = time.perf_counter()
        try:
            found = documents.load(key)
        except documents.DocCacheError as exc:
            emit(events.Note(f"ignoring a corrupt document cache entry ({exc}); encoding again"))
            try:
                documents.remove(key.digest())
            except OSError:
                pass  # stored again over it, or reported when that fails
            found = None
        except OSError as exc:  # a cache that cannot be read costs phase 1, never the answer
            emit(events.Note(f"cannot read the document cache ({one_line(exc)}); encoding instead", warning=True))
            found = None
        # ring's phase 1 has collectives, so ranks must agree: all load, or all encode
        if not self.comm.all_true(found is not None):
            return None, {"hit": False}
        tensors, record = found
        plan = partition.ranks[self.comm.rank]
        stats = EncodeStats(seconds=0.0, tokens=plan.num_tokens, blocks=len(plan.blocks))
        self.engine.import_document_kv(tensors, partition, stats)
        stats.seconds = time.perf_counter() - start
        return stats, {"hit": True, "load_s": stats.seconds, "saved_s": max(0.0, record["encode_seconds"] - stats.seconds)}
