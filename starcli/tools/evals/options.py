"""``starcli eval``'s option values read: tasks and families, lengths, star configurations."""

from __future__ import annotations

from ...errors import UsageError
from ..lengths import parse_length
from .tasks import FAMILIES, TASKS

DEFAULT_LENGTHS = "4k"


class OptionError(UsageError):
    """A bad option value (exit status 2)."""


def _items(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise OptionError(f"{option} is empty")
    return list(dict.fromkeys(items))


def parse_tasks(text: str, strict: bool = True) -> list[str]:
    """``all``, task names, or family names (every task of the family), comma-separated.

    ``strict=False`` keeps unknown names as they are: a data file may carry tasks of its own.
    """
    tasks: list[str] = []
    for item in _items(text, "--tasks"):
        if item == "all":
            tasks += list(TASKS)
        elif item in TASKS:
            tasks.append(item)
        elif item in FAMILIES:
            tasks += [name for name, (family, _) in TASKS.items() if family == item]
        elif not strict:
            tasks.append(item)
        else:
            raise OptionError(f"--tasks: unknown task {item!r}; choose all, {', '.join(FAMILIES)} or {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def parse_lengths(text: str) -> list[int]:
    return sorted({parse_length(item, "--lengths") for item in _items(text, "--lengths")})


def parse_configs(attention: str, block_sizes: str | None, anchor_size: int | None, relays: str | None = None) -> list[tuple]:
    """One config per dense/ring mode and one per star (block size × relay); block ``auto`` is the
    N/4 rule."""
    from ...star.partition import DEFAULT_RELAY

    relay_list = [DEFAULT_RELAY] if relays is None else [parse_length(item, "--relays", zero=True) for item in _items(relays, "--relays")]
    blocks: list[int | None] = [None]
    if block_sizes is not None:
        blocks = []
        for item in _items(block_sizes, "--block-sizes"):
            blocks.append(None if item == "auto" else parse_length(item, "--block-sizes"))
    if anchor_size is not None and anchor_size <= 0:
        raise OptionError(f"--anchor-size must be a positive number of tokens, got {anchor_size}")
    for block in blocks:
        if block is not None and anchor_size is not None and anchor_size > block:
            raise OptionError(f"--anchor-size ({anchor_size}) must not exceed a block size ({block})")
    configs: list[tuple] = []
    for mode in _items(attention, "--attention"):
        if mode == "star":
            configs += [("star", block, anchor_size, relay) for block in blocks for relay in relay_list]
        elif mode in ("dense", "ring"):
            configs.append((mode, None, None))
        else:
            raise OptionError(f"--attention: unknown mode {mode!r}; choose dense, star or ring")
    return configs


DECODINGS = ("greedy", "defaults")


def parse_decodings(text: str) -> list[str]:
    """``greedy`` (temperature 0, no penalty) and/or ``defaults`` (the model's own sampling)."""
    names = _items(text, "--decoding")
    for name in names:
        if name not in DECODINGS:
            raise OptionError(f"--decoding: unknown decoding {name!r}; choose {' or '.join(DECODINGS)}")
    return names


def decodings_for(names: list[str], model_dir, seed: int) -> dict:
    """name -> SamplingParams; ``defaults`` reads the model's generation config (greedy where it has none)."""
    from ...model.generation import read_defaults
    from ...star.sampling import SamplingParams

    out = {}
    for name in names:
        if name == "greedy":
            out[name] = SamplingParams()
        else:
            defaults = read_defaults(model_dir)
            out[name] = SamplingParams(defaults.get("temperature", 0.0), defaults.get("top_p", 1.0),
                                       defaults.get("top_k", 0), seed, defaults.get("repetition_penalty", 1.0))
    return out
