"""Factual questions about real source code, with known answers.

The synthetic tasks measure retrieval from filler; they say little about whether the model answers
a real question about a real document correctly, and whether it stops once it has answered. This
suite asks short factual questions (a name, a default value, a message, an exception class) about
source files of packages the project pins, so that every answer is literally in the document and
can be checked. The files are read from the installed packages and checked against pinned hashes:
another version would change the text and could change the answers.

A sample is scored like any other (``starcli.tools.evals.data.score``): the fraction of its
``answers`` found in the model's output, ignoring case. Each question has one answer string,
chosen so that a correct answer must contain it and a wrong one very likely does not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .tasks import Sample, TaskError

TASK = "code-qa"
SUITE_LENGTH = 8192
MAX_NEW_TOKENS = 200

# The range of document sizes the suite is built for, in estimated tokens: long enough that the
# answer has to be found, short enough for a small model's window with room to answer.
DOCUMENT_TOKENS = (2_500, 7_000)
_CHARS_PER_TOKEN = 3.5  # code has fewer characters per token than prose; rough, but model-free

# import name -> (distribution name, version pinned in requirements.lock)
_PINS: dict[str, tuple[str, str]] = {
    "rich": ("rich", "15.0.0"),
    "typer": ("typer", "0.29.2"),
    "pypdf": ("pypdf", "7.1.0"),
    "charset_normalizer": ("charset-normalizer", "3.5.3"),
    "gguf": ("gguf", "0.19.0"),
    "accelerate": ("accelerate", "1.15.0"),
}

# sha256 of each file at the pinned version; the answers below were read from these exact texts
_SHA256: dict[str, str] = {
    "rich/progress_bar.py": "9994cfa4953071f71d8100934f3de4c98f9f73bf5d74bc2dc7a1a18717e8d3ae",
    "rich/bar.py": "95d6d51cecca24e9df95536ebf5c52ee0e9d2d7d84df03275e474f6e9cc94dcb",
    "rich/panel.py": "f6c425d3484f22a1f91b68002d0a3835ea45c293f493dc13facfe03a6b39a487",
    "rich/padding.py": "87c5e7222bcbacdb65c48def40f2875e1e210308ce26a671d2c94cd33de0d7f3",
    "typer/testing.py": "5aac6eb971182c3a641697785bde2e6e08d1e3f5199ff9f6b66242d13982251f",
    "typer/completion.py": "a2b45068f57e01e1b15e5d07e26d200276f6552dd2e1384d60f99a2a9ba20c4a",
    "pypdf/_page_labels.py": "b4f70f5270c63797a359b7aa32506b30cad101edec9eac22541f084630ec7742",
    "charset_normalizer/models.py": "bb20515d606d29777715ecd2600e6bc7b67a5fe23ba2f5a59e0954bb64ec4e95",
    "charset_normalizer/legacy.py": "6e091d12fb9b4c238f94c28ecee10d5c73226ab877e956866d1bd64a522bd4a0",
    "gguf/gguf_reader.py": "91cb9e81f1a67f5856f012cf3f526ad9ffdb6b887d2aa66e2593ee6f63764aad",
    "accelerate/launchers.py": "ca291ef447f694c44dc9af7cc7dc70124710a673253f23efebcc28176e5e7c88",
}


@dataclass(frozen=True)
class _Question:
    question: str
    answers: tuple[str, ...]  # every one must appear in a correct answer


@dataclass(frozen=True)
class _Document:
    name: str
    package: str  # import name, a key of _PINS
    files: tuple[str, ...]  # paths from the folder that holds the package
    questions: tuple[_Question, ...]


# Answers avoid common words and numbers that a wrong answer could easily contain, and never appear
# in their own question.
_DOCUMENTS: tuple[_Document, ...] = (
    _Document(
        "rich-progress",
        "rich",
        ("rich/progress_bar.py", "rich/bar.py"),
        (
            _Question(
                "Which module-level constant sets how many characters the pulse animation of `ProgressBar` spans "
                "before it repeats?",
                ("PULSE_SIZE",),
            ),
            _Question(
                "What is the default value of the `complete_style` parameter of `ProgressBar`?",
                ("bar.complete",),
            ),
            _Question(
                "Which style name does `ProgressBar` use by default for the background of the bar?",
                ("bar.back",),
            ),
            _Question(
                "Which property of `ProgressBar` returns how far the bar has progressed in percent, or None when "
                "the total is None?",
                ("percentage_completed",),
            ),
            _Question(
                "In rich/bar.py, which list holds the partial block characters drawn where a `Bar` ends?",
                ("END_BLOCK_ELEMENTS",),
            ),
            _Question(
                "What is the `maxsize` of the cache on the `_get_pulse_segments` method of `ProgressBar`?",
                ("16",),
            ),
        ),
    ),
    _Document(
        "rich-panel",
        "rich",
        ("rich/panel.py", "rich/padding.py"),
        (
            _Question(
                "Which `Box` does a `Panel` draw its border with by default?",
                ("ROUNDED",),
            ),
            _Question(
                "Which exception does `Padding.unpack` raise when it is given a tuple of three integers?",
                ("ValueError",),
            ),
            _Question(
                "Which function from rich.cells does `Panel` use to measure how much room its title text takes?",
                ("cell_len",),
            ),
            _Question(
                "Which type alias names the forms a padding may take: an int, or a tuple of 1, 2 or 4 ints?",
                ("PaddingDimensions",),
            ),
            _Question(
                "Which classmethod of `Padding` builds an instance that pads only the left side by a given level, "
                "with expand=False?",
                ("indent",),
            ),
            _Question(
                "How is the title of a `Panel` aligned by default?",
                ("center",),
            ),
        ),
    ),
    _Document(
        "typer-testing",
        "typer",
        ("typer/testing.py", "typer/completion.py"),
        (
            _Question(
                "What program name does `CliRunner.get_default_prog_name` return when the command has no name?",
                ("root",),
            ),
            _Question(
                "What is the default value of the `charset` parameter of `CliRunner`?",
                ("utf-8",),
            ),
            _Question(
                "Which class mixes stdout and stderr so that the combined output is available in its `output` "
                "attribute?",
                ("StreamMixer",),
            ),
            _Question(
                "To what width does `CliRunner.isolation` force the help formatter while a command runs?",
                ("80",),
            ),
            _Question(
                "What word does `Result.__repr__` show in place of the exception when the command raised none?",
                ("okay",),
            ),
            _Question(
                "Which environment variable makes typer's completion options skip detecting the shell?",
                ("TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION",),
            ),
        ),
    ),
    _Document(
        "pypdf-page-labels",
        "pypdf",
        ("pypdf/_page_labels.py",),
        (
            _Question(
                "Which constant caps the largest number that can be written as a Roman numeral page label?",
                ("MAXIMUM_ROMAN_NUMERAL",),
            ),
            _Question(
                "What is the message of the ValueError that `number2uppercase_roman_numeral` raises for a number "
                "above the largest it supports?",
                ("Number is out of range",),
            ),
            _Question(
                "Which function converts page numbers for the `/a` numbering style?",
                ("number2lowercase_letter",),
            ),
            _Question(
                "How many levels of nested `/Kids` does `index2label` follow before it raises "
                "`NotImplementedError`?",
                ("100",),
            ),
            _Question(
                "What is the value of `MAXIMUM_PAGE_LABEL_LENGTH`?",
                ("512",),
            ),
            _Question(
                "Which function returns the (key, value) pair of the entry that follows a given key in a Nums "
                "array?",
                ("nums_next",),
            ),
        ),
    ),
    _Document(
        "charset-models",
        "charset_normalizer",
        ("charset_normalizer/models.py", "charset_normalizer/legacy.py"),
        (
            _Question(
                "What does `CharsetMatch.language` return when no language was detected but `ascii` is among the "
                "charsets the payload could come from?",
                ("English",),
            ),
            _Question(
                "Which exception does `CharsetMatches.__getitem__` raise for an encoding name that is not among "
                "the results?",
                ("KeyError",),
            ),
            _Question(
                "Which constant sets the payload size from which `CharsetMatches.append` stops grouping identical "
                "matches as submatches?",
                ("TOO_BIG_SEQUENCE",),
            ),
            _Question(
                "Which property of `CharsetMatch` is a hash of the decoded payload, used for deduplication?",
                ("fingerprint",),
            ),
            _Question(
                "By how much does the legacy `detect` function lower the confidence of a short sample that is "
                "neither UTF-8 nor ASCII and has no BOM?",
                ("0.2",),
            ),
            _Question(
                "Which property of `CharsetMatch` gives its mess ratio in percent, rounded to three digits?",
                ("percent_chaos",),
            ),
        ),
    ),
    _Document(
        "gguf-reader",
        "gguf",
        ("gguf/gguf_reader.py",),
        (
            _Question(
                "What is the message of the error `GGUFReader` raises when a file does not start with the "
                "expected magic number?",
                ("GGUF magic invalid",),
            ),
            _Question(
                "Which exception class does `GGUFReader._push_field` raise when a field with the same name was "
                "already read?",
                ("KeyError",),
            ),
            _Question(
                "Which numpy function does `GGUFReader` use to map the file into memory?",
                ("memmap",),
            ),
            _Question(
                "Which module-level list holds the GGUF file versions the reader can open?",
                ("READER_SUPPORTED_VERSIONS",),
            ),
            _Question(
                "Which metadata key can change the alignment of the tensor data?",
                ("general.alignment",),
            ),
            _Question(
                "As which numpy dtype does the reader load the data of quantized tensors, those not of type F16, "
                "F32, F64, I8, I16, I32 or I64?",
                ("uint8",),
            ),
        ),
    ),
    _Document(
        "accelerate-launchers",
        "accelerate",
        ("accelerate/launchers.py",),
        (
            _Question(
                "What is the default value of the `use_port` parameter of `notebook_launcher`?",
                ("29500",),
            ),
            _Question(
                "Which environment variable, set to true, makes `notebook_launcher` run a test launch before the "
                "real one?",
                ("ACCELERATE_DEBUG_MODE",),
            ),
            _Question(
                "Which library does `notebook_launcher` check for as one known to initialize the device when "
                "imported?",
                ("bitsandbytes",),
            ),
            _Question(
                "Which environment variable does `notebook_launcher` set to 1 before training on a single MPS "
                "device?",
                ("PYTORCH_ENABLE_MPS_FALLBACK",),
            ),
            _Question(
                "Which start method does `notebook_launcher` use instead of fork on XPU or ROCm devices?",
                ("spawn",),
            ),
            _Question(
                "What is the default rendezvous backend of `notebook_launcher`?",
                ("static",),
            ),
        ),
    ),
)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free size: the suite is fixed text, so its bounds must not depend on a model."""
    return round(len(text) / _CHARS_PER_TOKEN)


def _pinned_error(package: str, why: str) -> TaskError:
    distribution, version = _PINS[package]
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    # naming the installed version tells a stale venv from a locally edited file
    if installed is not None and installed != version:
        why += f"; {distribution} {installed} is installed"
    return TaskError(f"the code suite is pinned to {distribution} {version} ({why}); install requirements.lock")


def _read(package: str, path: str) -> str:
    """The text of ``path`` from the installed ``package``, if it is the pinned file."""
    spec = importlib.util.find_spec(package)  # locates without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise _pinned_error(package, f"{package} is not installed")
    file = Path(list(spec.submodule_search_locations)[0]).parent / path
    try:
        data = file.read_bytes()
    except OSError:
        raise _pinned_error(package, f"{path} is missing") from None
    if hashlib.sha256(data).hexdigest() != _SHA256[path]:
        raise _pinned_error(package, f"{path} differs")
    return data.decode("utf-8")


def _render(document: _Document) -> str:
    """The document's files, each under a ``### path`` line, a blank line between files."""
    sections = [f"### {path}\n" + _read(document.package, path).rstrip("\n") for path in document.files]
    return "\n\n".join(sections)


def code_suite() -> list[Sample]:
    """Every question as a sample over its document, documents and questions in the order above."""
    samples = []
    for document in _DOCUMENTS:
        context = _render(document)
        # one nominal length for the whole suite, so that its results form one row per config:
        # every document is under 8K tokens
        length = SUITE_LENGTH
        for index, question in enumerate(document.questions):
            samples.append(
                Sample(
                    id=f"{TASK}/{document.name}/{index}",
                    task=TASK,
                    length=length,
                    context=context,
                    question=question.question,
                    answers=list(question.answers),
                    max_new_tokens=MAX_NEW_TOKENS,
                )
            )
    return samples
