"""End to end on the real embedded default model, on CPU: the CLI finds a planted fact in a small
repository, with star attention over several blocks, in one process and over two gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_model

FILLER = "def helper_{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n    return x + {i}\n\n"


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "util.py").write_text("".join(FILLER.format(i=i) for i in range(40)))
    (root / "src" / "deploy.py").write_text(
        "# Deployment settings.\nLAUNCH_CODE = 'ZEBRA-7731'  # the secret launch code used by deploy()\n"
    )
    (root / "README.md").write_text("# demo\nA small project with helpers and a deploy script.\n")
    return root


def ask(repo, cache, *extra):
    env = {**os.environ, "STARCLI_CACHE": cache, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "starcli", "ask", str(repo), "What is the secret launch code? Reply with the code only.",
         "--device", "cpu", "--max-new-tokens", "16", "--block-size", "256", "--json", *extra],
        capture_output=True, text=True, timeout=900, env=env,
    )


def test_real_model_finds_the_planted_fact(repo, real_model_cache):
    # the model's own sampling (a fixed seed keeps the test repeatable)
    result = ask(repo, real_model_cache, "--seed", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["blocks"] >= 2  # star attention really splits the document
    assert data["sampling"]["temperature"] > 0 and data["sampling"]["seed"] == 3
    assert "ZEBRA-7731" in data["answers"][0]["answer"]
    dense = json.loads(ask(repo, real_model_cache, "--attention", "dense", "--seed", "3").stdout)
    assert "ZEBRA-7731" in dense["answers"][0]["answer"]
    # two ranks compute the same logits up to rounding: greedy answers are the same
    greedy = json.loads(ask(repo, real_model_cache, "--temperature", "0").stdout)
    assert "ZEBRA-7731" in greedy["answers"][0]["answer"]
    two_ranks = ask(repo, real_model_cache, "--temperature", "0", "--procs", "2")
    assert two_ranks.returncode == 0, two_ranks.stderr
    assert json.loads(two_ranks.stdout)["answers"][0]["answer"] == greedy["answers"][0]["answer"]
