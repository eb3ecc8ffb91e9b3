"""Split a chat prompt into the document part (phase 1) and the question part (phase 2).

Star Attention encodes the document once, independently of the question, so everything before the
question (system prompt, the opening of the user turn, the document) must be one token sequence and
the question plus the assistant opening another. The chat template is rendered once with markers in
place of the document and the question; the text around the markers gives both parts. The two parts
are tokenised separately, which is what makes the document part independent of the question.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

_DOC_MARK = "\u2063STARCLI-DOCUMENT\u2063"
_QUESTION_MARK = "\u2063STARCLI-QUESTION\u2063"
# Between the document and the question inside the user turn.
SEPARATOR = "\n\n"


class PromptError(UsageError):
    pass


# The system message of a question (ask, chat, eval; not summarize, which asks for a length). Small
# instruct models otherwise answer, then explain at length: on the code suite the default model ran
# into the 200-token limit on 14% of its answers without it and on none with it, at equal accuracy
# (docs/accuracy.md).
ANSWER_INSTRUCTION = ("You answer questions about the document the user gives. "
                      "Give the answer first, in a sentence or two; add detail only when asked.")


@dataclass(frozen=True)
class PromptParts:
    document_ids: list[int]
    question_ids: list[int]
    template: str  # "chat" or "plain"


def _render_template(tokenizer, system: str | None = None) -> tuple[str, str, str] | None:
    """(before document, between document and question, after question) from the chat template;
    ``system`` as its system message where the template has one (else none)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": f"{_DOC_MARK}{SEPARATOR}{_QUESTION_MARK}"}]
    text = None
    if system:
        try:
            text = tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages], tokenize=False,
                                                 add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template without a system role: the prompt goes without it
            text = None
        if text is not None and system not in text:
            text = None
    if text is None:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(_DOC_MARK) != 1 or text.count(_QUESTION_MARK) != 1:
        return None
    before, rest = text.split(_DOC_MARK)
    between, after = rest.split(_QUESTION_MARK)
    return before, between, after


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def document_text(tokenizer, document: str, system: str | None = None) -> tuple[str, str]:
    """The exact text of the document part, and the template kind."""
    parts = _render_template(tokenizer, system)
    if parts is None:
        return f"{document}{SEPARATOR}", "plain"
    before, between, _ = parts
    return f"{before}{document}{between}", "chat"


def question_text(tokenizer, question: str) -> str:
    parts = _render_template(tokenizer)
    if parts is None:
        return f"Question: {question}\nAnswer:"
    return f"{question}{parts[2]}"


def build_prompt(tokenizer, document: str, question: str, system: str | None = ANSWER_INSTRUCTION) -> PromptParts:
    """The document part (with ``system``, the answer instruction unless told otherwise: None for a
    summary) and the question part, tokenised apart."""
    ids = question_ids(tokenizer, question)
    doc_text, kind = document_text(tokenizer, document, system)
    doc_ids = _encode(tokenizer, doc_text)
    # a template's leading BOS is part of its text; tokenizers that add one themselves get it here
    bos = getattr(tokenizer, "bos_token_id", None)
    if kind == "plain" and bos is not None and tokenizer("x")["input_ids"][:1] == [bos]:
        doc_ids = [bos, *doc_ids]
    return PromptParts(doc_ids, ids, kind)


def question_ids(tokenizer, question: str) -> list[int]:
    """The question part of a first question: the question, then the assistant's opening."""
    if not question or not question.strip():
        raise PromptError("the question is empty")
    return _encode(tokenizer, question_text(tokenizer, question.strip()))


_ANSWER_MARK = "\u2063STARCLI-ANSWER\u2063"


def followup_text(tokenizer, question: str) -> str:
    """A follow-up turn's text after an answer: close the answer, open a user turn with the
    question, open the assistant turn. Rendered from the chat template like the first turn."""
    if not getattr(tokenizer, "chat_template", None):
        return f"\nQuestion: {question}\nAnswer:"
    messages = [
        {"role": "user", "content": f"{_DOC_MARK}{SEPARATOR}{_QUESTION_MARK}"},
        {"role": "assistant", "content": _ANSWER_MARK},
        {"role": "user", "content": "\u2063FOLLOWUP\u2063"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    between = text.split(_ANSWER_MARK, 1)[1]
    return between.replace("\u2063FOLLOWUP\u2063", question)


def followup_ids(tokenizer, question: str) -> list[int]:
    if not question or not question.strip():
        raise PromptError("the question is empty")
    return _encode(tokenizer, followup_text(tokenizer, question.strip()))


def conversation_ids(tokenizer, turns: list[tuple[str, str]], question: str) -> list[int]:
    """The question part of a follow-up asked afresh (a server's chat): the earlier questions and
    answers, then ``question``, as ``chat`` in one process feeds them turn by turn."""
    ids: list[int] = []
    for index, (asked, answered) in enumerate(turns):
        ids += followup_ids(tokenizer, asked) if index else _encode(tokenizer, question_text(tokenizer, asked.strip()))
        ids += _encode(tokenizer, answered)
    return ids + (followup_ids(tokenizer, question) if turns else _encode(tokenizer, question_text(tokenizer, question.strip())))


def stop_token_ids(tokenizer, model_config=None) -> set[int]:
    """EOS and the chat template's end-of-turn tokens."""
    ids: set[int] = set()
    for source in (tokenizer, getattr(model_config, "generation_config", None), model_config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for name in ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(name) if name in tokenizer.get_vocab() else None
        if isinstance(token_id, int):
            ids.add(token_id)
    return ids


_SPLIT_MARK = "\u2063STARCLI-SPLIT\u2063"


def _message_text(content) -> str:
    """A chat message's content: a string, or a list of parts of which only text is read."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(texts) != len(content):
            raise PromptError("only text message content is supported")
        return "".join(texts)
    raise PromptError("a message's content must be text")


def split_messages(tokenizer, messages: list[dict]) -> PromptParts:
    """A chat conversation as a document part and a question part: everything through the first
    user message's content is the document (encoded by phase 1, and reused by later requests that
    open the same way), the rest of the conversation and the assistant opening the question."""
    plain = [{"role": m["role"], "content": _message_text(m.get("content"))} for m in messages]
    first_user = next((i for i, m in enumerate(plain) if m["role"] == "user"), None)
    if first_user is None:
        raise PromptError("the conversation has no user message")
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError("the model has no chat template: use the document API (/v1/documents) instead")
    marked = [dict(m) for m in plain]
    marked[first_user]["content"] += _SPLIT_MARK
    text = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
    if text.count(_SPLIT_MARK) != 1:
        raise PromptError("the model's chat template changes message text; it cannot be split")
    document, question = text.split(_SPLIT_MARK)
    return PromptParts(_encode(tokenizer, document), _encode(tokenizer, question), "chat")
