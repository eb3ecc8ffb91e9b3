"""``starcli ask --server URL``: the files are read here, the question goes to a running
``starcli serve``, and its events come back as JSON lines for the same renderer as a run in this
process. Nothing here imports torch or transformers: a question costs the server's time only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import IO, Callable

from .. import events
from ..app.ask import read_input, stage
from ..app.chat import questions
from ..app.requests import AskRequest, Placement
from ..errors import InputError, RunError, StarcliError, UsageError
from ..events import Emit
from ..ingest.document import Document
from ..run.settings import RunSettings


def changed_settings(settings: RunSettings) -> dict:
    """The settings the user gave (those that differ from the defaults): the rest are the server's."""
    default = RunSettings()
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(RunSettings)
            if getattr(settings, f.name) != getattr(default, f.name)}


def ask_body(request, document: Document) -> dict:
    return {
        "questions": list(request.questions),
        "document": {"parts": [dataclasses.asdict(p) for p in document.parts],
                     "skipped": [dataclasses.asdict(s) for s in document.skipped]},
        "long": request.long, "words": request.words, "truncate": request.truncate, "window": request.window,
        "settings": changed_settings(request.settings), "stream": True,
    }


def _headers(api_key: str | None) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _failure(status: int, body: dict) -> StarcliError:
    error = body.get("error", body) if isinstance(body, dict) else {}
    message = error.get("message") or f"the server answered with status {status}"
    if status == 401:
        return UsageError(f"the server refused the API key: {message} (set --api-key or STARCLI_API_KEY)")
    return StarcliError(f"server: {message}", error.get("exit_code") or 1)


def post_stream(url: str, path: str, body: dict, api_key: str | None, emit: events.Emit) -> dict:
    """POST ``body`` and relay the streamed events to ``emit``; returns the final result."""
    import httpx

    base = _check_url(url)
    with _connection_errors(base):
        with httpx.stream("POST", base + path, json=body, headers=_headers(api_key),
                          timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code != 200:
                response.read()
                try:
                    failure = response.json()
                except ValueError:
                    failure = {}
                raise _failure(response.status_code, failure)
            result = None
            for line in response.iter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                if message.get("type") == "error" and "status" in message:
                    raise StarcliError(f"server: {message['message']}", message.get("exit_code") or 1)
                event = events.from_json(message)
                if isinstance(event, events.Result):
                    result = event.result
                else:
                    emit(event)
    if result is None:
        raise RunError(f"the server at {base} ended the answer without a result")
    return result


@contextlib.contextmanager
def _connection_errors(url: str):
    """A server that cannot be reached, or a connection that breaks, as one line."""
    import httpx

    try:
        yield
    except httpx.ConnectError as exc:
        raise InputError(f"cannot reach the server at {url} ({exc}); is `starcli serve` running?") from None
    except httpx.HTTPError as exc:
        raise RunError(f"the connection to the server at {url} failed: {exc}") from None


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--server must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def _post_json(url: str, path: str, body: dict, api_key: str | None) -> dict:
    import httpx

    with _connection_errors(url):
        response = httpx.post(url + path, json=body, headers=_headers(api_key), timeout=httpx.Timeout(30.0, read=None))
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200:
        raise _failure(response.status_code, answer)
    return answer


def chat_remote(url: str, api_key: str | None, request: AskRequest, emit: Emit, read_line: Callable[[], str | None],
                stdin: IO[bytes] | None = None) -> None:
    """``chat`` with a server: the input is read here and posted once; every turn asks about it
    with the conversation so far (the server keeps the document encoded, not the conversation)."""
    url = _check_url(url)
    document = read_input(request.sources, request.ingest, emit, stdin)
    parts = {"parts": [dataclasses.asdict(p) for p in document.parts],
             "skipped": [dataclasses.asdict(s) for s in document.skipped], "settings": changed_settings(request.settings)}
    posted = _post_json(url, "/v1/documents", parts, api_key)
    emit(events.Note(f"the server holds {posted['tokens']} document tokens (encoded in {posted['encode_s']:.2f} s); "
                     f"ask away (/exit or Ctrl-D to leave)"))
    history: list[tuple[str, str]] = []
    for line in questions(read_line):
        body = {"questions": [line], "history": history, "settings": changed_settings(request.settings)}
        try:
            result = post_stream(url, f"/v1/documents/{posted['id']}/ask", body, api_key, emit)
        except StarcliError as exc:
            if "no document" not in str(exc):
                raise
            posted = _post_json(url, "/v1/documents", parts, api_key)  # the server forgot it: post it again
            result = post_stream(url, f"/v1/documents/{posted['id']}/ask", body, api_key, emit)
        answer = result["answers"][0]
        emit(events.AnswerEnd(len(history)))
        rate = answer.get("decode_tokens_per_s") or 0.0
        emit(events.Note(f"{answer['answer_tokens']} tokens, first after {answer['prefill_s']:.2f} s, {rate:.1f} tokens/s, "
                         f"stopped: {answer['stop_reason']}"))
        history.append((line, answer["answer"]))


def ask_remote(url: str, api_key: str | None, request: AskRequest, emit: Emit, stdin: IO[bytes] | None = None) -> dict:
    """``ask`` or ``summarize`` answered by the server at ``url``: the input is read here, with the
    same notes and skips as in one process; the result has the same shape, with this side's
    reading time and the whole wait."""
    url = _check_url(url)
    if request.placement != Placement():
        raise UsageError("--procs, --gpus and --nnodes are the server's, set when it starts (`starcli serve --procs N`)")
    if request.window is not None and request.window < 1:
        raise UsageError(f"--window must be a positive number of tokens, got {request.window}")
    if not request.questions or any(not q.strip() for q in request.questions):
        raise UsageError("the question is empty")
    started = time.perf_counter()
    stage(emit, events.READING_INPUT, 0)
    document = read_input(request.sources, request.ingest, emit, stdin)
    ingest_s = time.perf_counter() - started
    stage(emit, events.READING_INPUT, 1)
    result = post_stream(url, "/v1/ask", ask_body(request, document), api_key, emit)
    return {**result, "ingest_s": ingest_s, "total_s": time.perf_counter() - started}
