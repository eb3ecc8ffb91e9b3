"""How many tokens one pass may hold, and what happens to an input that needs more.

The window is the model's positions (stretched by ``--rope-scaling``, or automatically for a
family that documents YaRN), or a smaller ``--window``. An input over it is refused with both sizes
and every way forward, cut with ``--truncate`` (reported), or read in passes (``app.passes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError, UsageError
from ..ingest.prompt import ANSWER_INSTRUCTION, build_prompt, document_text
from ..model.rope import YARN_FAMILIES, fitting_factor, parse_rope_scaling, scaled_positions, unsupported_reason
from ..run.settings import RunSettings
from .requests import AskRequest

Note = Callable[[str], None]


@dataclass
class Window:
    """How many tokens one pass may hold (prompt + answer), and where the number comes from."""

    limit: int | None  # None: the model's config names no limit
    model_positions: int | None  # the model's positions (times the --rope-scaling factor)
    forced: bool = False  # --window set the limit
    rope_scalable: bool = False  # --rope-scaling would work with this model (offered in errors)


def model_config(path, trust_remote_code: bool = False):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)


def model_window(config, settings: RunSettings, window: int | None) -> Window:
    positions = getattr(config, "max_position_embeddings", None)
    reason = unsupported_reason(config)
    if settings.rope_scaling:
        if reason:
            raise UsageError(f"--rope-scaling {settings.rope_scaling}: {reason}")
        positions = scaled_positions(positions, parse_rope_scaling(settings.rope_scaling))
    if window is not None and positions is not None and window > positions:
        raise UsageError(f"--window {window} is more than the model's {positions} positions")
    limit = window if window is not None else positions
    return Window(limit, positions, window is not None, reason is None and not settings.rope_scaling)


def automatic_stretch_limit(config) -> float | None:
    """The largest YaRN factor starcli applies unasked: the one a model family's authors document
    (Qwen2 and Qwen2.5: 4), whether the model is the embedded default, its GGUF named by path or
    any folder of that family; None (refuse, offering --rope-scaling) where starcli cannot know it."""
    return YARN_FAMILIES.get(getattr(config, "model_type", None))


def stretched(request: AskRequest, config, window: Window, needed: int, note: Note) -> tuple[Window, RunSettings]:
    """The window for an input of ``needed`` positions over a model's trained window: its RoPE
    stretched with YaRN by the smallest factor that fits, up to the factor its family documents
    (then sections or a refusal use the stretched window). Other models keep their window (the
    refusal offers --rope-scaling), as do --rope-scaling, --rope-scaling none and --window. Returns
    the window and the settings that give it (the stretch in ``rope_scaling``)."""
    settings = request.settings
    most = automatic_stretch_limit(config)
    if (not request.stretch or settings.rope_scaling or window.forced or most is None
            or not window.rope_scalable or window.model_positions is None):
        return window, settings
    factor = fitting_factor(needed, window.model_positions, most)
    if factor is None:
        return window, settings
    settings = dataclasses.replace(settings, rope_scaling=f"yarn:{factor:g}")
    wider = model_window(config, settings, request.window)
    note(f"the input needs {needed} positions, more than the model's trained {window.model_positions}: "
         f"its RoPE is stretched with YaRN x{factor:g} to {wider.limit} (less accurate past the trained "
         f"length; --rope-scaling none refuses instead)")
    return wider, settings


def needed_tokens(prompts, settings: RunSettings) -> int:
    return len(prompts[0].document_ids) + max(len(p.question_ids) for p in prompts) + settings.max_new_tokens


def too_long(prompts, settings: RunSettings, window: Window) -> InputError:
    """The refusal of an input over the window: both sizes, and every way forward."""
    doc_len = len(prompts[0].document_ids)
    question_len = max(len(p.question_ids) for p in prompts)
    which = "--window" if window.forced else "the model's window"
    choices = [
        "--long map (answer each window-sized section, then combine the answers)",
        "--truncate (read only the beginning)",
        "a lower --max-new-tokens",
        f"a larger --window (up to {window.model_positions})" if window.forced else "a model with a longer window",
    ]
    if window.rope_scalable and not window.forced:
        choices.append("--rope-scaling yarn:FACTOR (this model supports it; less accurate)")
    return InputError(
        f"the input is too long for the model: {doc_len} document + {question_len} question + "
        f"{settings.max_new_tokens} answer tokens = {needed_tokens(prompts, settings)} > {window.limit} positions "
        f"({which}); use a smaller input, " + ", ".join(choices[:-1]) + " or " + choices[-1]
    )


def truncate_document(tokenizer, document: str, questions: list[str], prompts, settings: RunSettings, limit: int,
                      note: Note):
    """--truncate: cut the document's end until every question's prompt fits ``limit``."""
    doc_len = len(prompts[0].document_ids)
    question_len = max(len(p.question_ids) for p in prompts)
    budget = limit - question_len - settings.max_new_tokens
    overhead = len(tokenizer(document_text(tokenizer, "", ANSWER_INSTRUCTION)[0], add_special_tokens=False)["input_ids"])
    if budget <= overhead:
        raise InputError(f"--max-new-tokens {settings.max_new_tokens} leaves no room for the document in {limit} positions")
    text = document
    while True:  # proportional cuts converge in a few rounds
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) + overhead <= budget:
            break
        keep = max(0, int(len(text) * (budget - overhead) / (len(ids) + 1) * 0.98))
        text = text[:keep]
    prompts = [build_prompt(tokenizer, text, q) for q in questions]
    note(f"--truncate: kept {len(prompts[0].document_ids)} of {doc_len} document tokens "
         f"({len(text)} of {len(document)} characters); the rest of the input was not read by the model")
    return prompts
