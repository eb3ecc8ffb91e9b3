"""The OpenAI chat completions API on top of a resident model: requests in, responses and
server-sent-event chunks out, in the shapes the official clients read.

A conversation's first user message is its document: it goes through phase 1 and stays encoded,
so later requests that open with the same messages (a conversation going on, or other questions
about the same pasted file) skip it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UsageError
from ..run.settings import RunSettings


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields starcli honours; others a client may send (user, metadata, ...) are ignored, and
    those that would change the answer's meaning and are not supported are refused."""

    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    model: Optional[str] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None  # not OpenAI's, but common among local servers
    repetition_penalty: Optional[float] = None  # likewise
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    n: int = 1
    logprobs: Optional[bool] = None
    tools: Optional[list[Any]] = None

    def settings(self, max_new_tokens: int) -> RunSettings:
        if self.n != 1:
            raise UsageError("n must be 1: one answer per request")
        if self.logprobs:
            raise UsageError("logprobs are not supported")
        if self.tools:
            raise UsageError("tools are not supported")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        limit = self.max_completion_tokens or self.max_tokens or max_new_tokens
        return RunSettings(max_new_tokens=limit, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                           repetition_penalty=self.repetition_penalty, seed=self.seed, stop=stop)

    def messages_json(self) -> list[dict]:
        return [m.model_dump() for m in self.messages]


def finish_reason(stop_reason: str) -> str:
    return "length" if stop_reason == "max new tokens" else "stop"


def usage(result: dict) -> dict:
    answer = result["answers"][0]
    prompt = result["document_tokens"] + answer["question_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": answer["answer_tokens"],
            "total_tokens": prompt + answer["answer_tokens"]}


class Completion:
    """One response's identity and the shapes of its parts."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def response(self, result: dict) -> dict:
        answer = result["answers"][0]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["answer"]},
                         "finish_reason": finish_reason(answer["stop_reason"]), "logprobs": None}],
            "usage": usage(result),
        }

    def chunk(self, delta: dict, finish: str | None = None, usage_part: dict | None = None, choices: bool = True) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
        if usage_part is not None:
            out["usage"] = usage_part
        return out
