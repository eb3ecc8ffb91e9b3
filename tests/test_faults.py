"""Bad inputs and faults, table-driven, through the real command line (a subprocess per case).

Every case asserts: the documented exit code, one `starcli: error:` line naming the problem, no
traceback, an end within a time bound (no hang), and nothing written or changed outside the cache.
Faults that need a running generation (closed pipe, SIGINT, a killed rank) live in test_cli.py and
test_launch.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pypdf import PdfReader, PdfWriter

from .test_sources import assemble_pdf, encrypt_pdf, make_pdf

BOUND_S = 120


def _tree(root: Path, skip: Path) -> dict[str, str]:
    """Path -> content hash (or kind) of everything under root except the cache."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_symlink() or path.is_dir() or not path.is_file():
                out[str(path)] = "special"
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if os.access(path, os.R_OK) else "unreadable"
    return out


def bomb_pdf(expanded_bytes: int = 400_000_000) -> bytes:
    """One page whose compressed content stream (about 400 KB) expands to ``expanded_bytes`` of text."""
    import zlib

    text = b"BT /F1 12 Tf 72 712 Td (" + b"A" * expanded_bytes + b") Tj ET"
    stream = zlib.compress(text, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" /Filter /FlateDecode >>\nstream\n" + stream + b"\nendstream",
    ]
    return assemble_pdf(objects)


def _make_remote_code_model(tiny_model_dir: Path, dest: Path) -> Path:
    shutil.copytree(tiny_model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = "starcli-custom"
    config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "custom.py").write_text("raise SystemExit('remote code ran')\n")
    return dest


def _corrupt_weights(tiny_model_dir: Path, dest: Path) -> Path:
    shutil.copytree(tiny_model_dir, dest)
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return dest


def _setup(case: str, work: Path, tiny_model_dir: Path) -> list[str]:
    """Create the case's input under ``work``; return the CLI arguments."""
    q = "what is this?"
    if case == "nonexistent":
        return ["ask", str(work / "missing.txt"), q]
    if case == "empty file":
        (work / "empty.txt").write_text("")
        return ["ask", str(work / "empty.txt"), q]
    if case == "directory of binaries":
        (work / "bin").mkdir()
        for i in range(3):
            (work / "bin" / f"b{i}.dat").write_bytes(bytes(range(256)) * 4)
        return ["ask", str(work / "bin"), q]
    if case == "only a file over the cap":
        (work / "big").mkdir()
        (work / "big" / "huge.txt").write_text("x" * 3000)
        return ["ask", str(work / "big"), q, "--max-file-bytes", "1000"]
    if case == "NUL bytes":
        (work / "nul.txt").write_bytes(b"text\x00more text\x00")
        return ["ask", str(work / "nul.txt"), q]
    if case == "undecodable bytes":
        (work / "junk.txt").write_bytes(bytes(range(128, 256)) * 8)
        return ["ask", str(work / "junk.txt"), q]
    if case == "FIFO":
        os.mkfifo(work / "pipe")
        return ["ask", str(work / "pipe"), q]
    if case == "encrypted PDF, no password":
        (work / "locked.pdf").write_bytes(encrypt_pdf(make_pdf(["secret text"]), "pw"))
        return ["ask", str(work / "locked.pdf"), q]
    if case == "encrypted PDF, wrong password":
        (work / "locked.pdf").write_bytes(encrypt_pdf(make_pdf(["secret text"]), "pw"))
        return ["ask", str(work / "locked.pdf"), q, "--password", "nope"]
    if case == "PDF without text":
        (work / "scan.pdf").write_bytes(make_pdf([None]))
        return ["ask", str(work / "scan.pdf"), q]
    if case == "truncated PDF":
        (work / "cut.pdf").write_bytes(make_pdf(["some text here"] * 3)[:300])
        return ["ask", str(work / "cut.pdf"), q]
    if case == "PDF decompression bomb":
        (work / "bomb.pdf").write_bytes(bomb_pdf())
        return ["ask", str(work / "bomb.pdf"), q]
    if case == "model with remote code":
        (work / "doc.txt").write_text("hello")
        model = _make_remote_code_model(tiny_model_dir, work / "custom-model")
        return ["ask", str(work / "doc.txt"), q, "--model", str(model)]
    if case == "corrupt safetensors":
        (work / "doc.txt").write_text("hello")
        model = _corrupt_weights(tiny_model_dir, work / "broken-model")
        return ["ask", str(work / "doc.txt"), q, "--model", str(model)]
    if case == "model folder without a tokenizer":
        (work / "doc.txt").write_text("hello")
        model = work / "no-tokenizer"
        model.mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(tiny_model_dir / name, model / name)
        return ["ask", str(work / "doc.txt"), q, "--model", str(model)]
    if case == "not a model folder":
        (work / "doc.txt").write_text("hello")
        (work / "empty-dir").mkdir()
        return ["ask", str(work / "doc.txt"), q, "--model", str(work / "empty-dir")]
    if case == "input over the window":
        (work / "long.txt").write_text("y" * 12000)  # byte tokenizer, 2048 positions: over even YaRN x4
        return ["ask", str(work / "long.txt"), q, "--model", str(tiny_model_dir)]
    if case == "--block-size 0":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--block-size", "0"]
    if case == "--anchor-size over the block":
        (work / "doc.txt").write_text("hello " * 300)
        return ["ask", str(work / "doc.txt"), q, "--block-size", "128", "--anchor-size", "256", "--model", str(tiny_model_dir)]
    if case == "--anchor-size over the block, long input on two ranks":
        (work / "long.txt").write_text("hello " * 1000)  # over the tiny model's 2048 positions: read in passes
        return ["ask", str(work / "long.txt"), q, "--long", "map", "--block-size", "128", "--anchor-size", "256",
                "--procs", "2", "--model", str(tiny_model_dir)]
    if case == "--top-p 0":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--top-p", "0"]
    if case == "--long unknown":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--long", "chunks", "--model", str(tiny_model_dir)]
    if case == "--window too small for a pass":
        (work / "long.txt").write_text("a line of text\n" * 100)  # byte tokenizer: 1.5K tokens
        return ["summarize", str(work / "long.txt"), "--window", "200", "--model", str(tiny_model_dir)]
    if case == "--window over the model's":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--window", "100000", "--model", str(tiny_model_dir)]
    if case == "--rope-scaling unknown":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--rope-scaling", "ntk:2", "--model", str(tiny_model_dir)]
    if case in EARLY:
        # a model that does not exist: an option checked only after the model is resolved would
        # fail on the model instead, with exit 1
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, *EARLY[case], "--model", str(work / "no-such-model")]
    raise AssertionError(case)


CASES = {
    # case: (exit code, words the error line must contain)
    "nonexistent": (1, "no such file or directory"),
    "empty file": (1, "no text"),
    "directory of binaries": (1, "binary"),
    "only a file over the cap": (1, "over size cap"),
    "NUL bytes": (1, "binary"),
    "undecodable bytes": (1, "binary"),
    "FIFO": (1, "not a regular file"),
    "encrypted PDF, no password": (1, "--password"),
    "encrypted PDF, wrong password": (1, "wrong password"),
    "PDF without text": (1, "no extractable text"),
    "truncated PDF": (1, "cannot read PDF"),
    "PDF decompression bomb": (1, "bomb.pdf"),
    "model with remote code": (1, "--trust-remote-code"),
    "corrupt safetensors": (1, "cannot load"),
    "not a model folder": (1, "config.json"),
    "model folder without a tokenizer": (1, "has no tokenizer"),
    "input over the window": (1, "too long"),
    "--block-size 0": (2, "--block-size"),
    "--anchor-size over the block": (2, "--anchor-size"),
    "--anchor-size over the block, long input on two ranks": (2, "--anchor-size"),
    "--top-p 0": (2, "--top-p"),
    "--long unknown": (2, "--long must be"),
    "--window too small for a pass": (2, "raise --window"),
    "--window over the model's": (2, "--window 100000"),
    "--rope-scaling unknown": (2, "--rope-scaling"),
    "--kernel unknown": (2, "--kernel"),
    "--dtype unknown": (2, "--dtype"),
    "--timeout 0": (2, "--timeout"),
    "--max-file-bytes -1": (2, "--max-file-bytes"),
    "--nnodes 0": (2, "--nnodes"),
    "--block-size abc": (2, "--block-size"),
    "unknown option": (2, "--frobnicate"),
    "STARCLI_DOC_CACHE_MAX_BYTES=abc": (2, "STARCLI_DOC_CACHE_MAX_BYTES"),
    "STARCLI_BLOCK_SIZE=abc": (2, "STARCLI_BLOCK_SIZE"),
}

# Usage errors caught before any work: the arguments each case adds, and its environment. Their
# stderr is the one error line and nothing else (no box, no progress).
EARLY = {
    "--kernel unknown": ["--kernel", "warp"],
    "--dtype unknown": ["--dtype", "float7"],
    "--timeout 0": ["--timeout", "0"],
    "--max-file-bytes -1": ["--max-file-bytes", "-1"],
    "--nnodes 0": ["--nnodes", "0"],
    "--block-size abc": ["--block-size", "abc"],
    "unknown option": ["--frobnicate"],
    "STARCLI_DOC_CACHE_MAX_BYTES=abc": ["--cache"],
    "STARCLI_BLOCK_SIZE=abc": [],
}
EARLY_ENV = {
    "STARCLI_DOC_CACHE_MAX_BYTES=abc": {"STARCLI_DOC_CACHE_MAX_BYTES": "abc"},
    "STARCLI_BLOCK_SIZE=abc": {"STARCLI_BLOCK_SIZE": "abc"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line(case, tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    cache = tmp_path / "cache"
    args = _setup(case, work, tiny_model_dir)
    if "--model" not in args:
        args += ["--model", str(tiny_model_dir)]
    before = _tree(tmp_path, cache)
    env = {**os.environ, "HOME": str(home), "STARCLI_CACHE": str(cache), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / ".cache"), **EARLY_ENV.get(case, {})}
    try:
        result = subprocess.run([sys.executable, "-m", "starcli", *args, "--device", "cpu", "--max-new-tokens", "4"],
                                capture_output=True, text=True, timeout=BOUND_S, env=env, cwd=work, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: still running after {BOUND_S} s (a hang, not an error)")
    code, words = CASES[case]
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("starcli: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "remote code ran" not in result.stderr
    assert _tree(tmp_path, cache) == before  # nothing written or changed outside the cache
    if case in EARLY:
        assert result.stderr.splitlines() == errors, result.stderr
    if case == "--block-size abc":
        assert "STARCLI_BLOCK_SIZE" not in result.stderr  # not set, so not named


SUCCEEDS_WITH_NOTE = {
    # case: words of the skip note on stderr
    "symlink loop": "symlink loop",
    "symlink escaping the directory": "symlink leaves the directory",
    "binary next to text": "binary",
}


@pytest.mark.parametrize("case", list(SUCCEEDS_WITH_NOTE))
def test_odd_files_in_a_directory_are_skipped_and_reported(case, tmp_path, tiny_model_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "good.txt").write_text("a readable file")
    if case == "symlink loop":
        os.symlink(repo / "loop_b", repo / "loop_a")
        os.symlink(repo / "loop_a", repo / "loop_b")
    elif case == "symlink escaping the directory":
        (tmp_path / "secret.txt").write_text("outside")
        os.symlink(tmp_path / "secret.txt", repo / "escape.txt")
    else:
        (repo / "blob.bin").write_bytes(b"\x00\x01" * 100)
    before = _tree(tmp_path, tmp_path / "cache")
    env = {**os.environ, "STARCLI_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "starcli", "ask", str(repo), "q?", "--model", str(tiny_model_dir),
                             "--device", "cpu", "--max-new-tokens", "2", "--json"],
                            capture_output=True, text=True, timeout=BOUND_S, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert SUCCEEDS_WITH_NOTE[case] in result.stderr and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["sources"] == [str(repo / "good.txt")]
    assert _tree(tmp_path, tmp_path / "cache") == before


# --- faults a run must survive with the right answer ---------------------------------------------


def _cli(args: list, tmp_path: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STARCLI_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "starcli", *map(str, args)], capture_output=True, text=True,
                          timeout=BOUND_S, env=env, cwd=cwd, stdin=subprocess.DEVNULL)


def _ask(doc, tmp_path: Path, model: Path, *extra, cwd: Path | None = None) -> tuple[dict, str]:
    result = _cli(["ask", doc, "q?", "--model", model, "--device", "cpu", "--max-new-tokens", "4", "--json", *extra],
                  tmp_path, cwd=cwd)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout), result.stderr


def _notes(stderr: str) -> list[str]:
    """stderr without progress and report lines."""
    return [line for line in stderr.splitlines() if line.startswith("starcli: ") and not any(
        stage in line for stage in ("reading input", "loading model", "tokenizing", "encoding blocks"))]


def damaged_cache_entry(tmp_path: Path, model: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("The vault code is 4711. " * 40)
    first, _ = _ask(doc, tmp_path, model, "--cache")
    tensors = next((tmp_path / "cache" / "documents").iterdir()) / "kv.safetensors"
    data = bytearray(tensors.read_bytes())
    third = len(data) // 3
    data[third:2 * third] = os.urandom(third)  # same size, header intact
    tensors.write_bytes(bytes(data))
    again, stderr = _ask(doc, tmp_path, model, "--cache")
    assert again["cache"]["hit"] is False
    assert again["answers"][0]["answer"] == first["answers"][0]["answer"]
    assert [line for line in _notes(stderr) if "cache" in line] == [
        "starcli: ignoring a corrupt document cache entry (kv.safetensors does not match the digest recorded "
        "when it was written); encoding again"], stderr


def _pdf_case(algorithm: str, user_password: str, given: str | None):
    def case(tmp_path: Path, model: Path) -> None:
        plain = make_pdf(["The treaty was signed in Lisbon."])
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain)))
        writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
        buffer = io.BytesIO()
        writer.write(buffer)
        (tmp_path / "plain.pdf").write_bytes(plain)
        (tmp_path / "crypt.pdf").write_bytes(buffer.getvalue())
        expected, _ = _ask("plain.pdf", tmp_path, model, cwd=tmp_path)
        got, stderr = _ask("crypt.pdf", tmp_path, model, *(["--password", given] if given else []), cwd=tmp_path)
        # the same text was read: a byte tokenizer, and names of the same length
        assert got["document_tokens"] == expected["document_tokens"], stderr
    return case


def _text_case(encoding: str, text: str, tail: bytes, note: str):
    def case(tmp_path: Path, model: Path) -> None:
        (tmp_path / "good.txt").write_text(text + tail.decode(encoding, errors="replace"), encoding="utf-8")
        (tmp_path / "read.txt").write_bytes(text.encode(encoding) + tail)
        expected, _ = _ask("good.txt", tmp_path, model, cwd=tmp_path)
        got, stderr = _ask("read.txt", tmp_path, model, cwd=tmp_path)
        # the same text was read: a byte tokenizer, and names of the same length
        assert got["document_tokens"] == expected["document_tokens"], stderr
        assert _notes(stderr) == [f"starcli: read.txt: {note}"], stderr
    return case


FRENCH = ("Le château de la forêt était élevé sur une colline où les élèves venaient étudier l'été. "
          "À côté, un café servait des crêpes et du thé ; les garçons préféraient la crème brûlée.\n") * 9


def same_file_two_names(tmp_path: Path, model: Path) -> None:
    (tmp_path / "doc.txt").write_text("The launch code is 4711. " * 20)
    first, _ = _ask("doc.txt", tmp_path, model, "--cache", cwd=tmp_path)
    second, _ = _ask(tmp_path / "doc.txt", tmp_path, model, "--cache", cwd=tmp_path)
    assert second["document_tokens"] == first["document_tokens"]
    assert second["cache"]["hit"] is True and second["sources"] == ["doc.txt"]


def cache_commands_say_what_they_did(tmp_path: Path, model: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta " * 30)
    _ask(doc, tmp_path, model, "--cache")
    listed = _cli(["cache", "ls"], tmp_path)
    assert listed.returncode == 0 and str(doc) in listed.stdout, listed.stdout
    assert time.strftime("%Y-%m-%d") in listed.stdout
    entry = listed.stdout.split()[0]
    removed = _cli(["cache", "rm", entry], tmp_path)
    assert removed.returncode == 0 and removed.stderr.strip() == f"removed {entry}"


def cache_folders_are_private(tmp_path: Path, model: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta " * 30)
    _ask(doc, tmp_path, model, "--cache")
    probe = "from starcli.model import resolve; print(resolve.models_dir())"
    env = {**os.environ, "STARCLI_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, capture_output=True)
    for name in ("", "documents", "models"):
        assert oct((tmp_path / "cache" / name).stat().st_mode & 0o777) == "0o700", name


def _cache_fault(make_fault):
    """A cache folder that cannot be used: the answer comes all the same, with a warning."""
    def case(tmp_path: Path, model: Path) -> None:
        doc = tmp_path / "doc.txt"
        doc.write_text("The vault code is 4711. " * 40)
        expected, _ = _ask(doc, tmp_path / "clean", model)
        make_fault(tmp_path / "cache")
        got, stderr = _ask(doc, tmp_path, model, "--cache")
        assert got["answers"][0]["answer"] == expected["answers"][0]["answer"]
        assert any("cache" in line for line in _notes(stderr)), stderr
    return case


def _documents_is_a_file(cache: Path) -> None:
    cache.mkdir()
    (cache / "documents").write_text("not a folder")


def _cache_is_a_file(cache: Path) -> None:
    cache.write_text("not a folder")


def entry_is_a_file(tmp_path: Path, model: Path) -> None:
    """A plain file where a cache entry's folder was: a miss, and storing it again fails."""
    doc = tmp_path / "doc.txt"
    doc.write_text("The vault code is 4711. " * 40)
    first, _ = _ask(doc, tmp_path, model, "--cache")
    entry = next((tmp_path / "cache" / "documents").iterdir())
    shutil.rmtree(entry)
    entry.write_text("not a folder")
    again, stderr = _ask(doc, tmp_path, model, "--cache")
    assert again["answers"][0]["answer"] == first["answers"][0]["answer"] and again["cache"]["hit"] is False
    assert any("could not store" in line for line in _notes(stderr)), stderr


SURVIVES = {
    "documents/ is a plain file": _cache_fault(_documents_is_a_file),
    "the cache folder is a plain file": _cache_fault(_cache_is_a_file),
    "a cache entry's folder is a plain file": entry_is_a_file,
    "damaged cache entry": damaged_cache_entry,
    "AES-128 PDF, right password": _pdf_case("AES-128", "pw", "pw"),
    "AES-256 PDF, right password": _pdf_case("AES-256", "pw", "pw"),
    "AES-128 PDF, empty user password": _pdf_case("AES-128", "", None),
    "AES-256 PDF, empty user password": _pdf_case("AES-256", "", None),
    "latin-1 French paragraph": _text_case("latin-1", FRENCH, b"", "not valid UTF-8: read as cp1252 (detected)"),
    # the detector's first guess for this one is cp1257, which turns "reçu" into "reįu"
    "latin-1 French words": _text_case("latin-1", "la français hôtel reçu et château leçon café à déjà première "
                                       "réunion première ça\n", b"", "not valid UTF-8: read as cp1252 (detected)"),
    # read as Big5 before: "è" and the "r" after it made one ideograph
    "latin-1 French line read as Chinese": _text_case("latin-1", "voiture au peu mère.\n", b"",
                                                      "not valid UTF-8: read as cp1252 (detected)"),
    "UTF-8 with 3 bad bytes": _text_case("utf-8", "Grüße aus Köln, naïve café.\n", b"bad: \xff\xfe\xe9\n",
                                         "not valid UTF-8: read as UTF-8 with 3 undecodable byte(s) replaced"),
    "same file by relative and absolute path": same_file_two_names,
    "cache ls and rm say what they did": cache_commands_say_what_they_did,
    "cache folders are private": cache_folders_are_private,
}


@pytest.mark.parametrize("case", list(SURVIVES))
def test_the_run_survives_with_the_right_answer(case, tmp_path, tiny_model_dir):
    SURVIVES[case](tmp_path, tiny_model_dir)


# --- startup: cheap answers load nothing heavy; Ctrl-C while loading is one line -------------------

NO_TORCH = {"--version": ["--version"], "--help": ["--help"], "ask --help": ["ask", "--help"], "cache ls --help": ["cache", "ls", "--help"],
            "bench --help": ["bench", "--help"], "eval --help": ["eval", "--help"]}


@pytest.mark.parametrize("case", list(NO_TORCH))
def test_cheap_answers_import_no_torch(case):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "starcli", *NO_TORCH[case]],
                            capture_output=True, text=True, timeout=BOUND_S)
    assert result.returncode == 0 and result.stdout, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & {"torch", "transformers"}


def test_the_app_layer_imports_no_torch():
    """Requests and policies (app/) are plain Python: torch loads only where a model runs."""
    probe = ("import sys, starcli.app.ask, starcli.app.chat, starcli.app.checks, starcli.app.window, starcli.app.passes; "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=BOUND_S)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def _loading_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtorch" in f.read()


INTERRUPTED = {
    # case: (extra arguments, the moment to press Ctrl-C)
    "while torch loads": ([], _loading_torch),
    "while the ranks start": (["--procs", "2"], lambda pid: any(
        b"torch.distributed.run" in open(f"/proc/{c}/cmdline", "rb").read() for c in _children(pid))),
}


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


@pytest.mark.parametrize("case", list(INTERRUPTED))
def test_ctrl_c_at_startup_is_one_line(case, tmp_path, tiny_model_dir):
    (tmp_path / "doc.txt").write_text("hello " * 50)
    extra, moment = INTERRUPTED[case]
    env = {**os.environ, "STARCLI_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "starcli", "ask", str(tmp_path / "doc.txt"), "q?", "--model",
                             str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + BOUND_S
    while not moment(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the moment came"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "starcli: interrupted" and all(line.startswith("starcli: ") for line in lines), err
    assert "error" not in err and out == ""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_while_the_answer_streams_ends_cleanly(sig, code, tmp_path, tiny_model_dir):
    """A signal while the answer streams, the document's cache entry just written: the run's exit
    status and one line, no half-written cache entry, no file left in the temp folder, no process
    left behind. (Phase 1 of a tiny model is too short here to be hit on purpose; the multi-rank
    signal rows in test_launch.py stop a run while its ranks work.)"""
    (tmp_path / "doc.txt").write_text("word " * 100)
    temp, cache = tmp_path / "tmp", tmp_path / "cache"
    temp.mkdir()
    env = {**os.environ, "STARCLI_CACHE": str(cache), "TMPDIR": str(temp), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1",
           "STARCLI_DTYPE": "float32"}
    # greedy on this document the tiny model answers until the token limit: seconds of streaming
    proc = subprocess.Popen([sys.executable, "-m", "starcli", "ask", str(tmp_path / "doc.txt"), "q?", "--model",
                             str(tiny_model_dir), "--device", "cpu", "--cache", "--max-new-tokens", "1400",
                             "--kernel", "math"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.read(1), "no answer"
    children = _children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=BOUND_S)
    err = err.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith("starcli: "), err
    assert [f for _, _, files in os.walk(temp) for f in files] == []
    entries = list((cache / "documents").iterdir())
    assert entries and all(sorted(f.name for f in entry.iterdir()) == ["entry.json", "kv.safetensors"] for entry in entries)
    assert not [c for c in children if Path(f"/proc/{c}").exists()]


# --- a rank that has finished its work cannot fail the run while the process ends ----------------


def test_a_rank_ends_without_teardown_once_its_work_is_reported(tmp_path, tiny_model_dir):
    from starcli.run.settings import Job, RunSettings

    job = Job(RunSettings(device="cpu", max_new_tokens=2, block_size=128), str(tiny_model_dir), [65] * 300, [[66, 67]], ["q?"])
    (tmp_path / "job.json").write_text(json.dumps(job.to_json()))
    # stands for library teardown that aborts at exit (gloo's threads did, now and then, under load)
    probe = ("import atexit, os, sys; atexit.register(os.abort); "
             f"sys.argv = ['worker', '--job', {str(tmp_path / 'job.json')!r}, '--device', 'cpu']; "
             "import runpy; runpy.run_module('starcli.run.worker', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=BOUND_S,
                            env={**env, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    # the run was reported before the end: run as a module without a renderer, a rank writes its
    # events to stdout as JSON lines, the result last
    reported = [json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()]
    assert reported[-1] == "result" and "token" in reported


# --- standard streams closed, endless, full or gone; forgotten arguments ---------------------------

STREAMS = {
    # case: (shell redirections after the command, exit code, words of the error line)
    "ask - with stdin closed": (["ask", "-", "q?"], "<&-", 1, "standard input is closed"),
    "chat with stdin closed": (["chat", "{doc}"], "<&-", 1, "standard input is closed"),
    "endless NUL bytes on stdin": (["ask", "-", "q?"], "< /dev/zero", 1, "binary"),
    "count into a full disk": (["count", "{doc}"], "> /dev/full", 1, "No space left on device"),
    "count with stdout closed": (["count", "{doc}"], ">&-", 1, "standard output is closed"),
    "a forgotten question": (["ask", "{doc}"], "< /dev/null", 2, "missing the question"),
    "worker job file missing": (["worker", "--job", "{work}/none.json", "--device", "cpu"], "", 1, "cannot read the job file"),
    "worker job file not JSON": (["worker", "--job", "{doc}", "--device", "cpu"], "", 1, "cannot read the job file"),
}


@pytest.mark.parametrize("case", list(STREAMS))
def test_closed_and_odd_standard_streams_are_one_line(case, tmp_path, tiny_model_dir):
    import shlex

    args, redirect, code, words = STREAMS[case]
    doc = tmp_path / "doc.txt"
    doc.write_text("The vault code is 4711.")
    args = [a.format(doc=doc, work=tmp_path) for a in args]
    if args[0] != "worker":
        args += ["--model", str(tiny_model_dir), "--device", "cpu"]
    command = shlex.join([sys.executable, "-m", "starcli", *args]) + " " + redirect
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=BOUND_S,
                            env={**os.environ, "STARCLI_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1"})
    errors = [line for line in result.stderr.splitlines() if line.startswith("starcli: error:")]
    assert result.returncode == code, result.stderr
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["--version"]])
def test_output_into_a_pipe_nobody_reads_ends_quietly(args):
    proc = subprocess.Popen([sys.executable, "-m", "starcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written (`starcli --help | true`)
    _, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 0 and err == b"", err


OUT_OF_RANGE = {
    # options: words of the error line (checked before the model, which does not exist here)
    ("--rope-scaling", "linear:1e308"): "--rope-scaling",
    ("--rope-scaling", "yarn:nan"): "--rope-scaling",
    ("--max-new-tokens", "99999999999"): "--max-new-tokens",
    ("--max-new-tokens", "0"): "--max-new-tokens",
    ("--temperature", "inf"): "--temperature",
    ("--temperature", "nan"): "--temperature",
    ("--top-p", "nan"): "--top-p",
    ("--top-k", "-5"): "--top-k",
    ("--repetition-penalty", "0"): "--repetition-penalty",
    ("--seed", str(2**70)): "--seed",
    ("--timeout", "inf"): "--timeout",
    ("--timeout", "nan"): "--timeout",
    ("--window", "0"): "--window",
    ("--procs", "1000", "--device", "cpu"): "--procs 1000",
    ("--nnodes", "2"): "--rdzv-endpoint",
    ("--long", "map", "--truncate"): "--truncate",
    ("--relay", "-1"): "--relay",
}


@pytest.mark.parametrize("options", list(OUT_OF_RANGE), ids=" ".join)
def test_numbers_out_of_range_are_usage_errors_before_any_work(options, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    result = subprocess.run([sys.executable, "-m", "starcli", "ask", str(doc), "q?", "--model", str(tmp_path / "none"),
                             *options], capture_output=True, text=True, timeout=BOUND_S, stdin=subprocess.DEVNULL,
                            env={**os.environ, "STARCLI_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("starcli: error:") and len(result.stderr.splitlines()) == 1, result.stderr
    assert OUT_OF_RANGE[options] in result.stderr


def test_a_cut_document_is_said_even_with_quiet(tmp_path, tiny_model_dir):
    doc = tmp_path / "long.txt"
    doc.write_text("some words here\n" * 2000)  # over the tiny model's 2048 positions
    result = _cli(["ask", doc, "q?", "--model", tiny_model_dir, "--device", "cpu", "--max-new-tokens", "3", "--truncate",
                   "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if line.startswith("starcli: --truncate: kept ")], result.stderr
    assert "--truncate: kept" in result.stderr


TOOL_FILES = {
    # case: (arguments, exit code, words of the error line): checked before the run, never a hang
    "eval --data on a FIFO": (["eval", "--data", "{work}/fifo"], 1, "not a regular file"),
    "eval --out into a missing folder": (["eval", "--out", "{work}/none/out.json"], 2, "does not exist"),
    "bench --json naming a folder": (["bench", "--shape", "tiny", "--json", "{work}"], 2, "is a folder"),
}


@pytest.mark.parametrize("case", list(TOOL_FILES))
def test_bench_and_eval_files_are_checked_first(case, tmp_path, tiny_model_dir):
    os.mkfifo(tmp_path / "fifo")  # with no writer: reading it would wait for ever
    args, code, words = TOOL_FILES[case]
    args = [a.format(work=tmp_path) for a in args]
    if args[0] == "eval":
        args += ["--model", str(tiny_model_dir), "--device", "cpu"]
    result = _cli(args, tmp_path)
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("starcli: error:")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in result.stderr, result.stderr
