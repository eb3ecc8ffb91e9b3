"""A model kept loaded between requests, with the documents it has encoded (``starcli serve``).

The server's requests run through the same paths as the command line's: ``app.ask.ask`` for a
document and its questions (the client read the files; ``ask`` is given this resident), and one
``Job`` for an OpenAI-style
conversation. Only the model and engine settings are fixed: they are the server's, and a request
that asks for others is told so. The executor keeps the ranks and the encoded documents, so a
second question about a document skips phase 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict

from ..errors import InputError, UsageError
from ..events import Emit
from ..ingest.document import Document
from ..ingest.prompt import ANSWER_INSTRUCTION, PromptParts, build_prompt, question_ids, split_messages
from ..run.settings import Job, RunSettings
from . import checks
from .decoding import decide_sampling
from .loading import executor_for, model_and_tokenizer
from .requests import AskRequest, Placement
from .window import model_config, model_window

# Documents whose tokenized prompt a server remembers (a few megabytes of ids each at most).
_REMEMBERED_PROMPTS = 16

# Settings that decide how the model is loaded: a server's are fixed when it starts.
LOAD_FIELDS = ("model", "device", "dtype", "kernel", "eager", "trust_remote_code", "allow_pickle", "pass_tokens",
               "rope_scaling")


class Resident:
    def __init__(self, settings: RunSettings, placement: Placement, memory_bytes: int, emit: Emit):
        request = checks.read_rope_scaling(AskRequest([], [], settings))
        settings = checks.check_settings(request.settings)
        checks.check_placement(placement)
        if placement.nnodes > 1:
            raise UsageError("a server runs on one machine: --nnodes must be 1")
        self.spec, self.tokenizer = model_and_tokenizer(settings, emit)
        self.settings = settings
        self.world = checks.world_size_for(placement, settings.device, 0)
        self.executor = executor_for(settings, placement, self.world, str(self.spec.path), self.tokenizer, memory_bytes)
        self.executor.load(emit)
        self.window = model_window(model_config(self.spec.path, settings.trust_remote_code), settings, None).limit
        self.memory_bytes = memory_bytes
        # the document parts of recent prompts by (text digest, system message): a question about a
        # kept document then tokenizes only itself (a 128K-token text takes 0.3 s to tokenize)
        self.document_ids: OrderedDict[tuple[str, str | None], PromptParts] = OrderedDict()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def broken(self) -> str | None:
        """Why the server's ranks can run no more requests (None while they can)."""
        return self.executor.pool.broken if self.executor.pool is not None else None

    def adopt(self, request: AskRequest) -> AskRequest:
        """``request`` as this server runs it: on its model, settings and ranks. A request that
        names others (another model, dtype, rank count) is refused, never silently changed."""
        asked, default = request.settings, RunSettings()
        for name in LOAD_FIELDS:
            value = getattr(asked, name)
            if value in (getattr(default, name), getattr(self.settings, name)):
                continue
            if name == "model" and value in (self.spec.name, str(self.spec.path)):
                continue
            if name == "model":
                raise UsageError(f"this server runs {self.spec.name}, not {value!r}; start a server with that model, "
                                 f"or run without --server")
            raise UsageError(f"this server runs {self.spec.name} with {name.replace('_', ' ')} "
                             f"{getattr(self.settings, name)!r}, not {value!r}; start a server with it, or run without --server")
        placement = request.placement
        if (placement.procs or placement.gpus or 1) not in (1, self.world) or placement.nnodes != 1:
            raise UsageError(f"this server runs on {self.world} rank(s); its ranks are set when it starts (serve --procs/--gpus)")
        settings = dataclasses.replace(asked, **{name: getattr(self.settings, name) for name in LOAD_FIELDS})
        # the rotary embedding is the loaded model's: no automatic stretch for one request
        return dataclasses.replace(request, settings=settings, placement=Placement(), stretch=False)

    def prompt(self, text: str, question: str, system: str | None) -> PromptParts:
        """``build_prompt`` with the document part remembered for the next question."""
        key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), system)
        known = self.document_ids.get(key)
        if known is None:
            known = build_prompt(self.tokenizer, text, question, system)
            self.document_ids[key] = known
            while len(self.document_ids) > _REMEMBERED_PROMPTS:
                self.document_ids.popitem(last=False)
            return known
        self.document_ids.move_to_end(key)
        return dataclasses.replace(known, question_ids=question_ids(self.tokenizer, question))

    def facts(self) -> dict:
        """What a request's result says about the server: the model was already loaded."""
        return {"resident": True, "model_load_s": 0.0, "warmup_s": 0.0}

    def encode(self, document: Document, settings: RunSettings, emit: Emit) -> dict:
        """Encode ``document`` as questions about it will find it; what a later question skips."""
        request = checks.check_request(self.adopt(AskRequest([], ["?"], settings)))
        ids = self.prompt(document.render(), "?", ANSWER_INSTRUCTION).document_ids
        facts = {"tokens": len(ids), "window": self.window}
        if self.window is not None and len(ids) + request.settings.max_new_tokens > self.window:
            # questions about it are refused, truncated or read in sections, as they ask
            return {**facts, "encoded": False, "blocks": 0, "cached": False, "encode_s": 0.0}
        job = Job(request.settings, str(self.spec.path), ids, [], [], sources=[p.path for p in document.parts])
        result = self.executor(job, emit)[-1]
        cache = result.get("cache") or {}
        return {**facts, "encoded": True, "blocks": result["blocks"], "cached": bool(cache.get("hit")),
                "encode_s": result["phase1_s"]}

    def complete(self, messages: list[dict], settings: RunSettings, emit: Emit) -> dict:
        """One OpenAI-style conversation: the result of its one answer, as ``ask`` reports it."""
        started = time.perf_counter()
        request = checks.check_request(self.adopt(AskRequest([], ["-"], settings)))
        settings = decide_sampling(request.settings, self.spec.path)
        prompt = split_messages(self.tokenizer, messages)
        needed = len(prompt.document_ids) + len(prompt.question_ids) + settings.max_new_tokens
        if self.window is not None and needed > self.window:
            raise InputError(f"the conversation needs {needed} tokens ({len(prompt.document_ids) + len(prompt.question_ids)} "
                             f"prompt + {settings.max_new_tokens} to answer), more than the model's window of {self.window}")
        job = Job(settings, str(self.spec.path), prompt.document_ids, [prompt.question_ids], [""])
        result = self.executor(job, emit)[-1]
        return {**result, **self.facts(), "model_name": self.spec.name, "window": self.window,
                "total_s": time.perf_counter() - started}

    def close(self) -> None:
        self.executor.close()
