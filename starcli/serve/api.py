"""The HTTP API of ``starcli serve`` (FastAPI): OpenAI's chat completions and models, a document
API, ``/v1/ask`` for ``starcli ask --server``, and ``/health``.

Every request runs on the one model thread (``jobs.JobQueue``), in arrival order. Errors are JSON
in OpenAI's shape (``{"error": {"message", "type", "code"}}``) with a 4xx or 5xx status, never a
traceback, and never the server's end. Streams are server-sent events for chat completions (what
OpenAI clients read) and JSON lines of ``starcli.events`` for the document API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import events
from ..app.ask import ask
from ..app.requests import LONG_MODES, AskRequest
from ..errors import Cancelled, InputError, RunError, StarcliError, UsageError
from ..ingest.document import Document, Part, Skip
from ..run.settings import RunSettings
from .jobs import JobQueue, Ticket
from .openai_compat import ChatRequest, Completion, finish_reason, usage


STOPPED = "the server stopped before the answer was complete"


@dataclass
class Limits:
    max_body_bytes: int = 64 * 2**20  # a request body, documents included
    max_documents: int = 64  # documents posted to /v1/documents and kept for questions
    shutdown_grace_s: float = 10.0  # how long requests in flight may finish when the server stops


class ApiError(Exception):
    """A status and message for the client; ``exit_code``: what ``starcli ask --server`` exits with."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 exit_code: int = 1):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.exit_code = status, message, kind, code, exit_code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code or str(self.status),
                          "exit_code": self.exit_code}}


def as_api_error(exc: BaseException, stopping: bool = False) -> ApiError:
    """A failure as the status and message a client gets."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled):
        return ApiError(503, STOPPED if stopping else str(exc), "server_error", "cancelled")
    if isinstance(exc, (UsageError, InputError)):
        code = "context_length_exceeded" if "window" in str(exc) else None
        return ApiError(400, str(exc), "invalid_request_error", code, exc.code)
    if isinstance(exc, StarcliError):
        return ApiError(500, str(exc), "server_error")
    return ApiError(500, f"internal error: {type(exc).__name__}", "server_error")


# --- request bodies ---------------------------------------------------------------------------
class PartIn(BaseModel):
    path: str = "-"
    text: str
    kind: str = "file"
    note: Optional[str] = None


class SkipIn(BaseModel):
    path: str
    reason: str


class DocumentIn(BaseModel):
    """A document as the client read it: its parts, or one plain ``text``."""

    model_config = ConfigDict(extra="forbid")
    text: Optional[str] = None
    parts: Optional[list[PartIn]] = None
    skipped: list[SkipIn] = Field(default_factory=list)

    def document(self) -> Document:
        if (self.text is None) == (self.parts is None):
            raise ApiError(400, "give the document as text or as parts, one of them")
        if self.text is not None:
            return Document([Part("-", self.text, "stdin")])
        if not self.parts:
            raise ApiError(400, "the document has no parts")
        return Document([Part(p.path, p.text, p.kind, p.note) for p in self.parts],
                        [Skip(s.path, s.reason) for s in self.skipped])


class PostedDocument(DocumentIn):
    """A document to keep encoded, with the block settings (``attention``, ``block_size``, ...) its
    questions will use."""

    settings: dict[str, Any] = Field(default_factory=dict)


class AskIn(BaseModel):
    """Questions about a document, with the options of ``starcli ask`` (``settings``: RunSettings'
    fields; the model and engine fields must be the server's or left out)."""

    model_config = ConfigDict(extra="forbid")
    questions: list[str] = Field(min_length=1)
    document: Optional[DocumentIn] = None  # /v1/ask only
    stream: bool = True
    long: str = "refuse"
    words: Optional[int] = None
    truncate: bool = False
    window: Optional[int] = None
    settings: dict[str, Any] = Field(default_factory=dict)
    history: list[tuple[str, str]] = Field(default_factory=list)  # earlier (question, answer) turns

    def request(self) -> AskRequest:
        if self.long not in (*LONG_MODES, "summary"):
            raise ApiError(400, f"long must be one of {', '.join((*LONG_MODES, 'summary'))}")
        return AskRequest([], list(self.questions), run_settings(self.settings), truncate=self.truncate, long=self.long,
                          words=self.words, window=self.window, history=[tuple(turn) for turn in self.history])


def run_settings(fields: dict[str, Any]) -> RunSettings:
    known = set(RunSettings.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ApiError(400, f"unknown settings: {', '.join(unknown)}")
    try:
        return RunSettings(**fields)
    except TypeError as exc:
        raise ApiError(400, f"bad settings: {exc}") from None


class DocumentStore:
    """Documents posted to ``/v1/documents``, by id, the oldest forgotten past ``limit`` (their
    encodings live in the executor's memory, evicted by bytes on their own)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.documents: OrderedDict[str, tuple[Document, dict]] = OrderedDict()

    @staticmethod
    def id_of(document: Document) -> str:
        digest = hashlib.sha256(json.dumps([[p.path, p.text] for p in document.parts]).encode()).hexdigest()
        return f"doc-{digest[:24]}"

    def add(self, document: Document, facts: dict) -> str:
        doc_id = self.id_of(document)
        self.documents[doc_id] = (document, facts)
        self.documents.move_to_end(doc_id)
        while len(self.documents) > self.limit:
            self.documents.popitem(last=False)
        return doc_id

    def get(self, doc_id: str) -> tuple[Document, dict]:
        if doc_id not in self.documents:
            raise ApiError(404, f"no document {doc_id!r} (post it to /v1/documents again)", code="document_not_found")
        self.documents.move_to_end(doc_id)
        return self.documents[doc_id]


def log(text: str) -> None:
    print(f"starcli: {text}", file=sys.stderr, flush=True)


def create_app(resident, limits: Limits = Limits(), api_key: str | None = None) -> FastAPI:
    """The application serving ``resident`` (an ``app.resident.Resident``)."""
    running: dict[str, Ticket] = {}

    def watch(ticket: Ticket) -> None:
        running["ticket"] = ticket
        resident.executor.cancelled = lambda: ticket.cancelled

    jobs = JobQueue(before_each=watch)
    store = DocumentStore(limits.max_documents)

    def stop_requests() -> None:
        """The grace period is over: what is waiting or running ends now, each with its error."""
        jobs.closing = True
        if running.get("ticket") is not None:
            running["ticket"].cancel()

    async def lifespan(app: FastAPI):
        yield
        # uvicorn has let the requests in flight finish (or cancelled them after the grace period)
        jobs.close(cancel_running=lambda: running.get("ticket") and running["ticket"].cancel())
        resident.close()
        log("stopped")

    app = FastAPI(title="starcli", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stop_requests = stop_requests
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarcliError)
    async def starcli_error(request: Request, exc: StarcliError):
        return await api_error(request, as_api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            where, message = "", "the request body is not valid JSON"
        return await api_error(request, ApiError(400, f"{where}: {message}" if where else message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return await api_error(request, ApiError(exc.status_code, str(exc.detail), "invalid_request_error"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return await api_error(request, as_api_error(exc))

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                error = ApiError(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error",
                                 "invalid_api_key", exit_code=2)
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    async def run(request: Request, work) -> AsyncIterator:
        """The events and then ``("result", value)`` of ``work`` run on the model thread; the
        ticket is cancelled when the client goes away or the handler ends early."""
        if resident.broken:
            raise ApiError(503, resident.broken, "server_error", "ranks_down")
        try:
            ticket = jobs.submit(work)
        except Cancelled as exc:
            raise ApiError(503, str(exc), "server_error", "stopping") from None
        checked = time.monotonic()
        ended = False
        try:
            async for item in ticket.stream():
                ended = isinstance(item, tuple)
                yield item
                if time.monotonic() - checked > 0.2:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        ticket.cancel()
        except StarcliError as exc:
            ended = True
            log(f"{request.url.path}: {'cancelled' if isinstance(exc, Cancelled) else 'failed'}: {exc}")
            raise
        finally:
            if not ended:
                log(f"{request.url.path}: the client went away; its request is cancelled")
            ticket.cancel()  # no effect once the work is done

    async def result_of(request: Request, work) -> Any:
        async for item in run(request, work):
            if isinstance(item, tuple):
                return item[1]
        raise RunError("the request ended without a result")

    def timing(route: str, started: float, result: dict) -> None:
        answers = result.get("answers") or []
        cache = result.get("cache") or {}
        first = answers[0].get("time_to_first_token_s") if answers else None
        log(f"{route}: document {result.get('document_tokens', 0)} tokens"
            f"{' (kept encoded)' if cache.get('memory') else ''}, {sum(a.get('answer_tokens', 0) for a in answers)} "
            f"answer tokens, first token {first if first is not None else 0:.2f} s, {time.perf_counter() - started:.2f} s")

    # --- routes -------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        broken = resident.broken
        body = {"status": "broken" if broken else "ok", "model": resident.name, "ranks": resident.world,
                "waiting": jobs.waiting, "documents": len(store.documents)}
        if broken:
            body["error"] = broken
        return JSONResponse(body, status_code=503 if broken else 200)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": resident.name, "object": "model", "created": 0, "owned_by": "starcli"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        started = time.perf_counter()
        if body.model not in (None, "", resident.name):
            raise ApiError(404, f"this server runs {resident.name!r}, not {body.model!r}", code="model_not_found")
        settings = body.settings(RunSettings().max_new_tokens)
        messages = body.messages_json()
        completion = Completion(resident.name)

        def work(emit):
            return resident.complete(messages, settings, emit)

        if not body.stream:
            result = await result_of(request, work)
            timing("chat completion", started, result)
            return completion.response(result)

        with_usage = bool(body.stream_options and body.stream_options.include_usage)
        items = run(request, work)
        first = await _first_token_or_end(items)  # errors before the answer starts are a status, not a stream

        async def sse():
            yield _sse(completion.chunk({"role": "assistant", "content": ""}))
            try:
                async for item in _chain(first, items):
                    if isinstance(item, events.Token):
                        yield _sse(completion.chunk({"content": item.text}))
                    elif isinstance(item, tuple):
                        result = item[1]
                        yield _sse(completion.chunk({}, finish_reason(result["answers"][0]["stop_reason"])))
                        if with_usage:
                            yield _sse(completion.chunk({}, usage_part=usage(result), choices=False))
                        timing("chat completion (stream)", started, result)
            except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes in the stream
                yield _sse(as_api_error(exc, jobs.closing).body())
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def answer(request: Request, body: AskIn, document: Document):
        started = time.perf_counter()
        asked = body.request()

        def work(emit):
            return ask(asked, emit, document=document, resident=resident)

        if not body.stream:
            result = await result_of(request, work)
            timing("ask", started, result)
            return result
        items = run(request, work)

        async def lines():
            # no waiting for the first token: progress streams as it comes, and a failure is the last line
            try:
                async for item in items:
                    if isinstance(item, tuple):
                        timing("ask", started, item[1])
                        yield json.dumps(events.to_json(events.Result(item[1]))) + "\n"
                    elif not isinstance(item, events.Result):  # each job's own: the final one comes last
                        yield json.dumps(events.to_json(item)) + "\n"
            except Exception as exc:  # noqa: BLE001 - sent as the stream's last line
                error = as_api_error(exc, jobs.closing)
                yield json.dumps({"type": "error", "rank": -1, "message": error.message, "status": error.status,
                                  "exit_code": error.exit_code}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/v1/ask")
    async def ask_with_document(body: AskIn, request: Request):
        if body.document is None:
            raise ApiError(400, "document is missing (or use /v1/documents/{id}/ask)")
        return await answer(request, body, body.document.document())

    @app.post("/v1/documents")
    async def post_document(body: PostedDocument, request: Request):
        document = body.document()
        doc_id = store.id_of(document)
        settings = run_settings(body.settings)  # the block settings its questions will use
        facts = await result_of(request, lambda emit: resident.encode(document, settings, emit))
        store.add(document, facts)
        return {"id": doc_id, "object": "document", **facts}

    @app.get("/v1/documents")
    async def list_documents():
        return {"object": "list", "data": [{"id": doc_id, "object": "document", **facts}
                                           for doc_id, (_, facts) in reversed(store.documents.items())]}

    @app.post("/v1/documents/{doc_id}/ask")
    async def ask_document(doc_id: str, body: AskIn, request: Request):
        if body.document is not None:
            raise ApiError(400, "the document is the one in the path; leave out document")
        document, _ = store.get(doc_id)
        return await answer(request, body, document)

    @app.delete("/v1/documents/{doc_id}")
    async def delete_document(doc_id: str):
        store.get(doc_id)
        del store.documents[doc_id]
        return {"id": doc_id, "object": "document", "deleted": True}

    return app


class BodyLimit:
    """Refuse a request body over ``limit`` bytes (413), by its length header or as it arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = StarletteHTTPException(413, f"the request body is over the server's limit of {self.limit} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = JSONResponse(ApiError(413, too_large.detail).body(), status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _first_token_or_end(items: AsyncIterator) -> list:
    """Read ``items`` up to the answer's first token (or its end): a failure before it raises
    here, so the response gets an error status instead of a stream that fails."""
    seen = []
    async for item in items:
        seen.append(item)
        if isinstance(item, (events.Token, tuple)):
            break
    return seen


async def _chain(first: list, rest: AsyncIterator) -> AsyncIterator:
    for item in first:
        yield item
    async for item in rest:
        yield item
