"""Bad inputs and faults, table-driven, through the real command line (a subprocess per case).

Every case asserts: the documented exit code, one `starcli: error:` line naming the problem, no
traceback, an end within a time bound (no hang), and nothing written or changed outside the cache.
Faults that need a running generation (closed pipe, SIGINT, a killed rank) live in test_cli.py and
test_launch.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    if case == "not a model folder":
        (work / "doc.txt").write_text("hello")
        (work / "empty-dir").mkdir()
        return ["ask", str(work / "doc.txt"), q, "--model", str(work / "empty-dir")]
    if case == "input over the window":
        (work / "long.txt").write_text("y" * 5000)  # byte tokenizer, 2048 positions
        return ["ask", str(work / "long.txt"), q, "--model", str(tiny_model_dir)]
    if case == "--block-size 0":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--block-size", "0"]
    if case == "--anchor-size over the block":
        (work / "doc.txt").write_text("hello " * 300)
        return ["ask", str(work / "doc.txt"), q, "--block-size", "128", "--anchor-size", "256", "--model", str(tiny_model_dir)]
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
    if case == "--kernel unknown":
        (work / "doc.txt").write_text("hello")
        return ["ask", str(work / "doc.txt"), q, "--kernel", "warp", "--model", str(tiny_model_dir)]
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
    "input over the window": (1, "too long"),
    "--block-size 0": (2, "--block-size"),
    "--anchor-size over the block": (2, "--anchor-size"),
    "--top-p 0": (2, "--top-p"),
    "--kernel unknown": (1, "unknown kernel"),
    "--long unknown": (2, "--long must be"),
    "--window too small for a pass": (2, "raise --window"),
    "--window over the model's": (2, "--window 100000"),
    "--rope-scaling unknown": (2, "--rope-scaling"),
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
           "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / ".cache")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "starcli.cli", *args, "--device", "cpu", "--max-new-tokens", "4"],
                            capture_output=True, text=True, timeout=BOUND_S, env=env, cwd=work, stdin=subprocess.DEVNULL)
    assert time.monotonic() - started < BOUND_S
    code, words = CASES[case]
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("starcli: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "remote code ran" not in result.stderr
    assert _tree(tmp_path, cache) == before  # nothing written or changed outside the cache


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
    result = subprocess.run([sys.executable, "-m", "starcli.cli", "ask", str(repo), "q?", "--model", str(tiny_model_dir),
                             "--device", "cpu", "--max-new-tokens", "2", "--json"],
                            capture_output=True, text=True, timeout=BOUND_S, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert SUCCEEDS_WITH_NOTE[case] in result.stderr and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["sources"] == [str(repo / "good.txt")]
    assert _tree(tmp_path, tmp_path / "cache") == before
