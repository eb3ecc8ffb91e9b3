"""A new user's first run, through the command line, on an empty cache: a GGUF named with --model
and the embedded default model (small stand-in part files) are converted by the command itself,
with their progress, then answered; the second run reuses the conversion."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from starcli.cli.main import app
from starcli.model import convert
from starcli.model import resolve as models
from starcli.model.decode_weights import COPIES_FILE

from .tiny import fake_default_parts, write_tiny_qwen2_gguf

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("first-run") / "tiny-qwen2.gguf")


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("the retry logic is in net.py")
    return path


def converted_entries():
    root = models.models_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def refuse_conversion(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("converted again although a finished conversion was cached")

    monkeypatch.setattr(convert, "convert_gguf", boom)


def test_a_gguf_is_counted_then_asked_on_an_empty_cache(tiny_gguf, doc, monkeypatch):
    assert converted_entries() == []
    counted = invoke("count", doc, "--model", tiny_gguf, "--json")
    assert counted.exit_code == 0, counted.stderr
    assert json.loads(counted.stdout)["document_tokens"] > len(doc.read_text())  # byte tokens + the template
    assert "converting model: done (4/4" in counted.stderr and "hashing model" in counted.stderr
    entry = models.models_dir() / converted_entries()[0]
    # the conversion leaves the family's decoding defaults and the int8 decode copies beside the weights
    generation = json.loads((entry / "generation_config.json").read_text())
    assert generation["temperature"] == 0.7 and generation["top_k"] == 20 and generation["repetition_penalty"] == 1.05
    assert (entry / COPIES_FILE).is_file()

    refuse_conversion(monkeypatch)
    asked = invoke("ask", doc, "where is the retry logic?", "--model", tiny_gguf, "--device", "cpu",
                   "--max-new-tokens", "6", "--seed", "11", "--json")
    assert asked.exit_code == 0, asked.stderr
    result = json.loads(asked.stdout)
    answer = result["answers"][0]
    assert answer["answer_tokens"] >= 1 and answer["stop_reason"]
    # no sampling option given: the model's defaults, with the seed that repeats the answer
    assert result["sampling"] == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
                                  "seed": 11, "from": "the model's defaults"}
    again = invoke("ask", doc, "where is the retry logic?", "--model", tiny_gguf, "--device", "cpu",
                   "--max-new-tokens", "6", "--seed", "11", "--json")
    assert json.loads(again.stdout)["answers"][0]["answer"] == answer["answer"]


def test_the_default_model_is_assembled_converted_and_answered_on_first_ask(tmp_path, tiny_gguf, doc, monkeypatch):
    fake_default_parts(tmp_path / "parts", tiny_gguf.read_bytes(), monkeypatch)
    first = invoke("ask", doc, "where is the retry logic?", "--device", "cpu", "--max-new-tokens", "6",
                   "--temperature", "0")
    assert first.exit_code == 0, first.stderr
    for line in ("assembling model: done", "converting model: done (4/4", "--- starcli report ---",
                 "sampling       greedy, repetition penalty 1.05 (as asked, the rest the model's defaults)"):
        assert line in first.stderr
    assert first.stdout.strip()
    assert converted_entries() == [models.DEFAULT_MODEL_NAME]

    refuse_conversion(monkeypatch)
    second = invoke("ask", doc, "where is the retry logic?", "--device", "cpu", "--max-new-tokens", "6",
                    "--temperature", "0")
    assert second.exit_code == 0, second.stderr
    assert "converting model" not in second.stderr and "assembling" not in second.stderr
    assert second.stdout == first.stdout  # greedy: the same answer from the cached conversion


def test_a_damaged_conversion_is_converted_again_before_use(tiny_gguf, doc):
    """Bytes of the converted weights overwritten in place (same size): the next run finds the
    digest changed and converts again, and the answer is the one the intact model gives."""
    asked = ("ask", doc, "where is the retry logic?", "--model", tiny_gguf, "--device", "cpu", "--max-new-tokens", "6",
             "--temperature", "0", "--json")
    first = invoke(*asked)
    assert first.exit_code == 0, first.stderr
    weights = models.models_dir() / converted_entries()[0] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    weights.write_bytes(bytes(data))
    again = invoke(*asked)
    assert again.exit_code == 0, again.stderr
    assert "converting model" in again.stderr  # caught before use, and rebuilt from the GGUF
    assert json.loads(again.stdout)["answers"][0]["answer"] == json.loads(first.stdout)["answers"][0]["answer"]
    untouched = invoke(*asked)
    assert "converting model" not in untouched.stderr  # an intact conversion is trusted as it is
