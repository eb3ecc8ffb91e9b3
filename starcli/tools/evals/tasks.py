"""Synthetic long-context tasks (retrieval, variable tracking, aggregation, QA) from a seed.

Every task first draws everything random about a sample (keys, values, depths, the question) and
then renders a context from a number of *units*: filler sentences, list entries, paragraphs. The
number of units is searched with the given tokenizer so that the whole prompt (chat template,
context, question) plus the answer budget comes to about ``length_tokens`` tokens, the way
long-context benchmarks count a sequence length: a 4K sample fits a 4K window with its answer.
"""

from __future__ import annotations

import functools
import random
import re
import string
from dataclasses import asdict, dataclass
from typing import Callable

from ...errors import UsageError
from .words import CITIES, FILLER_SENTENCES, FIRST_NAMES, HOBBIES, LAST_NAMES, OCCUPATIONS, WORDS


class TaskError(UsageError):
    """A task cannot be generated as asked; the message is one line for the user."""


@dataclass
class Sample:
    id: str
    task: str
    length: int  # the nominal length in tokens the sample was sized for
    context: str
    question: str
    answers: list[str]
    max_new_tokens: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Recipe:
    """One sample with every random choice made except its size."""

    question: str
    answers: list[str]
    max_new_tokens: int
    render: Callable[[int], str]  # number of units -> context text
    min_units: int = 0
    max_units: int | None = None  # where the task runs out of distinct material


# --- shared pieces ---------------------------------------------------------------------------------


def _number(rng: random.Random, taken: set[str]) -> str:
    while True:
        value = str(rng.randint(1_000_000, 9_999_999))
        if value not in taken:
            taken.add(value)
            return value


def _key(rng: random.Random, taken: set[str]) -> str:
    while True:
        key = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}"
        if key not in taken:
            taken.add(key)
            return key


def _needle(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value}."


def _filler(n: int) -> list[str]:
    return [FILLER_SENTENCES[i % len(FILLER_SENTENCES)] for i in range(n)]


def _with_inserts(units: list[str], inserts: list[tuple[float, str]]) -> list[str]:
    """``units`` with each text placed at its depth (0 = start, 1 = end); equal depths keep their
    order, which variable chains rely on."""
    out = list(units)
    ordered = sorted(((depth, i, text) for i, (depth, text) in enumerate(inserts)), reverse=True)
    for depth, _, text in ordered:
        out.insert(round(depth * len(units)), text)
    return out


def _haystack(units: list[str], inserts: list[tuple[float, str]]) -> str:
    return " ".join(_with_inserts(units, inserts))


# --- needle in a haystack --------------------------------------------------------------------------

_NEEDLES = 4  # needles in the multi-key, multi-value and multi-query variants


def _ask_number(key: str) -> str:
    return f"What is the special magic number for {key} mentioned in the text above?"


def _niah_single(rng: random.Random, length: int) -> _Recipe:
    taken: set[str] = set()
    key, value, depth = _key(rng, taken), _number(rng, taken), rng.random()
    needle = [(depth, _needle(key, value))]
    return _Recipe(_ask_number(key), [value], 32, lambda n: _haystack(_filler(n), needle))


def _niah_multikey(rng: random.Random, length: int) -> _Recipe:
    taken: set[str] = set()
    keys = [_key(rng, taken) for _ in range(_NEEDLES)]
    values = [_number(rng, taken) for _ in keys]
    needles = [(rng.random(), _needle(k, v)) for k, v in zip(keys, values)]
    # the first key is asked; the others are distractors of the same form
    return _Recipe(_ask_number(keys[0]), [values[0]], 32, lambda n: _haystack(_filler(n), needles))


def _niah_multivalue(rng: random.Random, length: int) -> _Recipe:
    taken: set[str] = set()
    key = _key(rng, taken)
    values = [_number(rng, taken) for _ in range(_NEEDLES)]
    needles = [(rng.random(), _needle(key, v)) for v in values]
    question = f"What are all the special magic numbers for {key} mentioned in the text above?"
    return _Recipe(question, values, 128, lambda n: _haystack(_filler(n), needles))


def _niah_multiquery(rng: random.Random, length: int) -> _Recipe:
    taken: set[str] = set()
    keys = [_key(rng, taken) for _ in range(_NEEDLES)]
    values = [_number(rng, taken) for _ in keys]
    needles = [(rng.random(), _needle(k, v)) for k, v in zip(keys, values)]
    listed = ", ".join(keys[:-1]) + f" and {keys[-1]}"
    question = f"What are the special magic numbers for {listed} mentioned in the text above?"
    return _Recipe(question, values, 128, lambda n: _haystack(_filler(n), needles))


# A prose unit is one sentence, split further when longer than this many words (code listings),
# so that sizing stays fine-grained and the needle always lands between units.
_PROSE_UNIT_WORDS = 48


@functools.lru_cache(maxsize=1)
def _prose_units() -> tuple[str, ...]:
    """Sentences of the Python documentation shipped with every CPython, in a fixed order.

    The text changes between Python versions, so prose samples repeat exactly within one version.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise TaskError("niah_prose needs the documentation text (pydoc_data) that this Python lacks") from None
    text = " ".join(" ".join(topics[name].split()) for name in sorted(topics))
    units: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        words = sentence.split()
        units.extend(" ".join(words[i : i + _PROSE_UNIT_WORDS]) for i in range(0, len(words), _PROSE_UNIT_WORDS))
    return tuple(units)


def _niah_prose(rng: random.Random, length: int) -> _Recipe:
    taken: set[str] = set()
    key, value, depth = _key(rng, taken), _number(rng, taken), rng.random()
    prose = _prose_units()
    offset = rng.randrange(len(prose))
    needle = [(depth, _needle(key, value))]

    def render(n: int) -> str:
        # long contexts wrap around the documentation text
        return _haystack([prose[(offset + i) % len(prose)] for i in range(n)], needle)

    return _Recipe(_ask_number(key), [value], 32, render)


# --- variable tracking -----------------------------------------------------------------------------

_VT_HOPS = 4


def _variable_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in names:
            names.append(name)
    return names


def _vt(rng: random.Random, length: int) -> _Recipe:
    names = _variable_names(rng, _VT_HOPS + 1)
    value = str(rng.randint(10_000, 99_999))
    statements = [f"VAR {names[0]} = {value}."]
    statements += [f"VAR {later} = VAR {earlier}." for earlier, later in zip(names, names[1:])]
    # sorted depths keep each assignment after the one it copies from
    depths = sorted(rng.random() for _ in statements)
    inserts = list(zip(depths, statements))
    question = f"Find all variables that are assigned the value {value} in the text above."
    return _Recipe(question, names, 96, lambda n: _haystack(_filler(n), inserts))


# --- aggregation -----------------------------------------------------------------------------------

_CWE_COMMON = 10


def _cwe(rng: random.Random, length: int) -> _Recipe:
    pool = list(WORDS)
    rng.shuffle(pool)
    common, rare = pool[:_CWE_COMMON], pool[_CWE_COMMON:]
    firsts, seconds = rare[:], rare[:]
    rng.shuffle(seconds)
    # at 4K tokens and above, 30 copies of each common word against 3 of each rare one; shorter
    # lists scale both down so that the common words do not fill the whole budget
    freq_common = 30 if length >= 4096 else max(6, 30 * length // 4096)
    freq_rare = max(1, freq_common // 10)
    order_seed = rng.random()
    size = len(rare)

    def rare_word(i: int) -> str:
        if i < size:
            return rare[i]
        # beyond the single words, distinct pairs: (i % size, i // size) is a bijection
        j = i - size
        return f"{firsts[j % size]}-{seconds[(j // size + j) % size]}"

    def render(n: int) -> str:
        items = common * freq_common + [rare_word(i) for i in range(n) for _ in range(freq_rare)]
        random.Random(order_seed).shuffle(items)
        numbered = " ".join(f"{i}. {word}" for i, word in enumerate(items, 1))
        return (
            "Below is a numbered list of words. In these words, some appear more often than others. "
            f"Memorize the ones that appear most often.\n{numbered}"
        )

    question = f"What are the {_CWE_COMMON} most common words in the list above? Answer with the words only."
    return _Recipe(question, common, 96, render, max_units=size + size * size)


_FWE_VOCAB = 800
_FWE_ALPHA = 2.0


def _coded_words(rng: random.Random, count: int) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 6)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _fwe(rng: random.Random, length: int) -> _Recipe:
    coded = _coded_words(rng, _FWE_VOCAB)
    weights = [1.0 / rank**_FWE_ALPHA for rank in range(1, _FWE_VOCAB + 1)]
    total = sum(weights)
    order_seed = rng.random()

    def render(n: int) -> str:
        # exact Zipf counts rather than draws: the top three never tie, whatever the seed
        items = [word for word, w in zip(coded, weights) for _ in range(int(n * w / total))]
        random.Random(order_seed).shuffle(items)
        lines = [" ".join(items[i : i + 16]) for i in range(0, len(items), 16)]
        return "Read the following coded text and track the frequency of each coded word.\n" + "\n".join(lines)

    question = "What are the three most frequently appearing coded words in the text above? Answer with the three words only."
    # from 60 words on, the counts of ranks 1 to 4 are strictly decreasing
    return _Recipe(question, coded[:3], 48, render, min_units=60)


# --- question answering ----------------------------------------------------------------------------


def _qa(rng: random.Random, length: int) -> _Recipe:
    firsts, lasts = list(FIRST_NAMES), list(LAST_NAMES)
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    attribute_seed = rng.random()
    pairs = len(firsts) * len(lasts)

    def person(i: int) -> str:
        """The full name of person ``i``; distinct for every ``i``."""
        j = i % pairs
        first, last = firsts[j % len(firsts)], lasts[(j // len(firsts) + j) % len(lasts)]
        middle = f" {string.ascii_uppercase[i // pairs - 1]}." if i >= pairs else ""
        return f"{first}{middle} {last}"

    def facts(i: int) -> tuple[str, str, str, str]:
        r = random.Random(f"{attribute_seed}:{i}")
        return r.choice(CITIES), str(r.randint(1900, 1999)), r.choice(OCCUPATIONS), r.choice(HOBBIES)

    def paragraph(i: int) -> str:
        name = person(i)
        city, year, occupation, hobby = facts(i)
        article = "an" if occupation[0] in "aeiou" else "a"
        # the full name twice: many people share a first name, so "Anna worked as" would be ambiguous
        return f"{name} was born in {city} in {year}. Later, {name} worked as {article} {occupation} and enjoyed {hobby}."

    # person 0 is the one asked about; everyone after is a paragraph of the same shape
    name = person(0)
    city, year, occupation, _ = facts(0)
    question, answer = rng.choice(
        [
            (f"In which city was {name} born?", city),
            (f"In which year was {name} born?", year),
            (f"What did {name} work as?", occupation),
        ]
    )
    depth = rng.random()

    def render(n: int) -> str:
        body = _with_inserts([paragraph(i) for i in range(1, n + 1)], [(depth, paragraph(0))])
        return "The following document lists short biographies.\n\n" + "\n".join(body)

    return _Recipe(question, [answer], 32, render, max_units=pairs * (len(string.ascii_uppercase) + 1) - 1)


# --- registry and sizing ---------------------------------------------------------------------------

TASKS: dict[str, tuple[str, Callable[[random.Random, int], _Recipe]]] = {
    "niah_single": ("niah", _niah_single),
    "niah_multikey": ("niah", _niah_multikey),
    "niah_multivalue": ("niah", _niah_multivalue),
    "niah_multiquery": ("niah", _niah_multiquery),
    "niah_prose": ("niah", _niah_prose),
    "vt": ("vt", _vt),
    "cwe": ("aggregation", _cwe),
    "fwe": ("aggregation", _fwe),
    "qa": ("qa", _qa),
}
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(family for family, _ in TASKS.values()))


def family_of(task: str) -> str:
    """The family a task is reported under; a task from a data file that is not built in is its own."""
    return TASKS[task][0] if task in TASKS else task


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_overhead(tokenizer, question: str) -> int:
    """Tokens the prompt adds around the context: template, separator and question."""
    from ...ingest.prompt import build_prompt

    parts = build_prompt(tokenizer, "", question)
    return len(parts.document_ids) + len(parts.question_ids)


def _fit_units(recipe: _Recipe, budget: int, count: Callable[[str], int]) -> int:
    """The most units whose context has at most ``budget`` tokens.

    Token counts grow with the number of units (almost always strictly), so a bracket around a
    linear estimate followed by bisection needs about a dozen tokenizations even for long contexts.
    """
    cache: dict[int, int] = {}

    def tokens(n: int) -> int:
        if n not in cache:
            cache[n] = count(recipe.render(n))
        return cache[n]

    low = recipe.min_units
    if tokens(low) > budget:
        raise TaskError(f"the smallest context of this task has {tokens(low)} tokens, over the budget of {budget}")
    # every unit adds at least about a token, so a budget never needs more than a few units per
    # token; the cap keeps a mis-estimate from rendering an absurd context
    top = low + 4 * budget + 64
    if recipe.max_units is not None:
        top = min(top, recipe.max_units)
    probe = min(low + 32, top)
    per_unit = max((tokens(probe) - tokens(low)) / max(probe - low, 1), 1e-3)
    guess = min(top, max(low + 1, low + int((budget - tokens(low)) / per_unit)))
    step = max(1, guess // 32)
    if tokens(guess) <= budget:
        low, high = guess, None
        while high is None:
            if low >= top:
                return top
            n = min(low + step, top)
            if tokens(n) > budget:
                high = n
            else:
                low, step = n, step * 2
    else:
        high = guess
        while True:
            n = max(low, high - step)
            if n == low or tokens(n) <= budget:
                low = n
                break
            high, step = n, step * 2
    while high - low > 1:
        mid = (low + high) // 2
        if tokens(mid) <= budget:
            low = mid
        else:
            high = mid
    return low


def generate(task: str, length_tokens: int, count: int, seed: int, tokenizer) -> list[Sample]:
    """``count`` samples of ``task`` sized for ``length_tokens`` with ``tokenizer``; same seed, same samples."""
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    if length_tokens <= 0:
        raise TaskError(f"the length must be a positive number of tokens, got {length_tokens}")
    if count < 0:
        raise TaskError(f"the sample count must not be negative, got {count}")
    _, make = TASKS[task]
    samples = []
    for index in range(count):
        # string seeds hash with SHA-512 inside random, so they are stable across runs and versions
        rng = random.Random(f"{seed}:{task}:{length_tokens}:{index}")
        recipe = make(rng, length_tokens)
        budget = length_tokens - _prompt_overhead(tokenizer, recipe.question) - recipe.max_new_tokens
        try:
            units = _fit_units(recipe, budget, lambda text: count_tokens(tokenizer, text))
        except TaskError as exc:
            raise TaskError(f"{task} at {length_tokens} tokens: {exc}") from None
        samples.append(
            Sample(
                id=f"{task}-{length_tokens}-{seed}-{index}",
                task=task,
                length=length_tokens,
                context=recipe.render(units),
                question=recipe.question,
                answers=list(recipe.answers),
                max_new_tokens=recipe.max_new_tokens,
            )
        )
    return samples


def generate_suite(tasks: list[str], lengths: list[int], count: int, seed: int, tokenizer) -> list[Sample]:
    """Every task at every length, ``count`` samples each, ordered by length then task."""
    return [sample for length in lengths for task in tasks for sample in generate(task, length, count, seed, tokenizer)]
