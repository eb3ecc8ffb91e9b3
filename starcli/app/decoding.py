"""How an answer is decoded: the options the user gave, else the model's own defaults.

Decided once, in the command's process, after the model is resolved and before any rank starts, so
that every rank samples alike and the report names what was used, the seed included: a sampled
answer can be repeated with ``--seed``.
"""

from __future__ import annotations

import dataclasses
import secrets

from ..errors import InputError
from ..model.generation import SAMPLING_KEYS, read_defaults
from ..run.settings import RunSettings


def decide_sampling(settings: RunSettings, model_dir) -> RunSettings:
    """``settings`` with every sampling field decided: given options first, then the model's
    generation config; a sampled run without ``--seed`` gets a random seed, named in the report."""
    defaults = read_defaults(model_dir)
    chosen = {key: getattr(settings, key) for key in SAMPLING_KEYS}
    from_model = [key for key, value in chosen.items() if value is None and key in defaults]
    chosen.update({key: defaults[key] for key in from_model})
    decided = dataclasses.replace(settings, **chosen)
    params = decided.sampling()
    try:
        params.validate()
    except ValueError as exc:
        raise InputError(f"the model's generation config cannot be used ({exc}); set the option yourself") from None
    seed = settings.seed
    if seed is None and not params.greedy:
        seed = secrets.randbelow(2**32)
    given = [key for key in SAMPLING_KEYS if getattr(settings, key) is not None]
    if from_model:
        source = "as asked, the rest the model's defaults" if given else "the model's defaults"
    else:
        source = "as asked" if given else "the model names no defaults"
    return dataclasses.replace(decided, seed=seed, sampling_from=source)


def describe_sampling(report: dict) -> str:
    """One line for people: ``temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.05, seed 7
    (the model's defaults; --seed 7 repeats it)``."""
    if report["temperature"] == 0:
        parts = ["greedy"]
    else:
        parts = [f"temperature {report['temperature']:g}"]
        if report["top_p"] < 1:
            parts.append(f"top-p {report['top_p']:g}")
        if report["top_k"]:
            parts.append(f"top-k {report['top_k']}")
    if report["repetition_penalty"] != 1:
        parts.append(f"repetition penalty {report['repetition_penalty']:g}")
    if report.get("seed") is not None:
        parts.append(f"seed {report['seed']}")
    why = report.get("from") or ""
    if report.get("seed") is not None:
        why = f"{why}; --seed {report['seed']} repeats it" if why else f"--seed {report['seed']} repeats it"
    return ", ".join(parts) + (f" ({why})" if why else "")
