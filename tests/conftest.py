"""Shared fixtures: a tiny random model folder with a byte-level tokenizer and a chat template,
every starcli cache pointed into tmp, and the real default model's conversion cache shared by the
session (converted once per test run, in STARCLI_TEST_CACHE or a session temp dir)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved Qwen2-shaped random model (GQA) plus tokenizer: loads like any user model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from starcli.tools.random_model import byte_tokenizer

    from .tiny import tiny_config

    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = byte_tokenizer()
    config = tiny_config("qwen2")
    config.vocab_size = len(tokenizer) + 4
    config.max_position_embeddings = 2048
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    # The head speaks visible ASCII only: every other row is zero, and a logit of 0 never beats the
    # largest of 94 random ones. A random model's answer is otherwise any bytes, blank or an
    # immediate end of turn on some CPU's rounding, and tests that look at the answer would fail there.
    visible = tokenizer.convert_tokens_to_ids([chr(b) for b in range(ord("!"), ord("~") + 1)])
    mask = torch.zeros(config.vocab_size, 1)
    mask[visible] = 1.0
    with torch.no_grad():
        model.lm_head.weight.mul_(mask)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches or reaches a model hub."""
    monkeypatch.setenv("STARCLI_CACHE", str(tmp_path / "starcli-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.delenv("STARCLI_MODEL", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="session")
def real_model_cache(tmp_path_factory):
    """Cache dir holding the converted default model, shared by every real-model test."""
    path = os.environ.get("STARCLI_TEST_CACHE")
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    return str(tmp_path_factory.mktemp("real-model-cache"))


@pytest.fixture(autouse=True)
def float32_on_every_cpu(request, monkeypatch):
    """``--dtype auto`` resolves to float32 in tests on every CPU: tiny-model tests compare against
    float32 references (the auto choice has its own tests). Real-model tests keep the machine's."""
    if request.node.get_closest_marker("real_model") is None:
        from starcli.model import dtypes

        monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: False)
