"""--cache: one phase 1 per document, reused across runs; never a stale or foreign entry."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starcli.cli.main import app

runner = CliRunner()


def ask(model, doc, question, *extra):
    result = runner.invoke(app, ["ask", str(doc), question, "--model", str(model), "--device", "cpu",
                                 "--max-new-tokens", "6", "--json", "--block-size", "128", *map(str, extra)])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_hit_miss_and_invalidation(tiny_model_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("The deploy key is 1234. " * 20)
    plain, _ = ask(tiny_model_dir, doc, "key?")
    first, _ = ask(tiny_model_dir, doc, "key?", "--cache")
    assert first["cache"] == {"hit": False}
    second, _ = ask(tiny_model_dir, doc, "key?", "--cache")
    assert second["cache"]["hit"] is True
    assert second["answers"][0]["answer"] == first["answers"][0]["answer"] == plain["answers"][0]["answer"]
    # a different question about the same document reuses the same encoding
    other, _ = ask(tiny_model_dir, doc, "what else?", "--cache")
    assert other["cache"]["hit"] is True
    assert other["answers"][0]["answer"] == ask(tiny_model_dir, doc, "what else?")[0]["answers"][0]["answer"]
    # other block size, other attention mode, changed file: misses
    assert ask(tiny_model_dir, doc, "key?", "--cache", "--block-size", "256")[0]["cache"]["hit"] is False
    assert ask(tiny_model_dir, doc, "key?", "--cache", "--attention", "dense")[0]["cache"]["hit"] is False
    doc.write_text("The deploy key is 9999. " * 20)
    assert ask(tiny_model_dir, doc, "key?", "--cache")[0]["cache"]["hit"] is False


def test_corrupt_entry_is_ignored_with_a_warning(tiny_model_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma " * 30)
    expected, _ = ask(tiny_model_dir, doc, "q?", "--cache")
    entries = list((Path(os.environ["STARCLI_CACHE"]) / "documents").iterdir())
    assert len(entries) == 1
    tensors = entries[0] / "kv.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    again, stderr = ask(tiny_model_dir, doc, "q?", "--cache")
    assert "ignoring a corrupt document cache entry" in stderr
    assert again["cache"]["hit"] is False
    assert again["answers"][0]["answer"] == expected["answers"][0]["answer"]
    assert ask(tiny_model_dir, doc, "q?", "--cache")[0]["cache"]["hit"] is True  # rewritten


@pytest.mark.parametrize("fault", [
    errno.EROFS, errno.ENOSPC, errno.EACCES,  # a read-only cache, a full disk, a folder not ours
])
def test_a_cache_that_fails_costs_a_warning_not_the_answer(tiny_model_dir, tmp_path, monkeypatch, fault):
    """Reading and writing the cache fail with ``fault`` (this machine's tests run as root, where
    file modes deny nothing, so the failure is made where the cache reads and writes)."""
    from starcli.cache import documents

    doc = tmp_path / "doc.txt"
    doc.write_text("The deploy key is 1234. " * 20)
    expected, _ = ask(tiny_model_dir, doc, "key?")

    def fail(*args, **kwargs):
        raise OSError(fault, os.strerror(fault))

    monkeypatch.setattr(documents, "load", fail)
    monkeypatch.setattr(documents, "save", fail)
    got, stderr = ask(tiny_model_dir, doc, "key?", "--cache")
    assert got["answers"][0]["answer"] == expected["answers"][0]["answer"]
    assert got["cache"] == {"hit": False}
    assert "cannot read the document cache" in stderr and os.strerror(fault) in stderr
    assert "could not store the encoded document in the cache" in stderr


def test_cache_commands(tiny_model_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("one two three " * 30)
    ask(tiny_model_dir, doc, "q?", "--cache")
    listed = runner.invoke(app, ["cache", "ls", "--json"])
    entries = json.loads(listed.stdout)
    assert len(entries) == 1 and entries[0]["attention"] == "star" and entries[0]["bytes"] > 0
    assert runner.invoke(app, ["cache", "rm", "nope"]).exit_code == 1
    assert runner.invoke(app, ["cache", "rm", entries[0]["id"]]).exit_code == 0
    assert json.loads(runner.invoke(app, ["cache", "ls", "--json"]).stdout) == []
    ask(tiny_model_dir, doc, "q?", "--cache")
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["cache", "ls", "--json"]).stdout) == []
    cache_root = Path(os.environ["STARCLI_CACHE"])
    assert oct(cache_root.stat().st_mode & 0o777) == "0o700"


def test_two_ranks_keep_one_shard_each(tiny_model_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("The code is 4711. " * 30)
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}

    def run():
        out = subprocess.run([sys.executable, "-m", "starcli", "ask", str(doc), "code?", "--model", str(tiny_model_dir),
                              "--device", "cpu", "--max-new-tokens", "6", "--json", "--block-size", "128", "--procs", "2", "--cache"],
                             capture_output=True, text=True, timeout=240, env=env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first, second = run(), run()
    assert first["cache"]["hit"] is False and second["cache"]["hit"] is True
    assert first["answers"][0]["answer"] == second["answers"][0]["answer"]
    assert len(list((Path(os.environ["STARCLI_CACHE"]) / "documents").iterdir())) == 2
