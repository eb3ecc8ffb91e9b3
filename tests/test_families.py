"""Every model family the engine claims: exact against transformers, or refused in one line.

Each family is a tiny random model of its own config class (float32, 3 layers; windows of 96 and
chunks of 128 tokens, shorter than the 400-token document, so an ignored window changes the
answer). Exact means: the engine's dense answer equals transformers' own greedy ``generate`` with
eager attention token for token, star with one block equals it too, in both decoding modes the CPU
runs (the growing tail and the fixed-shape step a GPU captures), and star with several blocks runs.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from starcli.model.load import check_family
from starcli.model.spec import ModelError, ModelSpec
from starcli.star import attention
from starcli.star.engine import EngineError, StarEngine
from starcli.star.partition import plan_partition, plan_star

from .tiny import family_config, family_pair, random_ids

DOCUMENT, QUESTION, NEW = 400, 6, 12

EXACT = [
    "llama", "qwen2", "qwen2-window", "qwen3", "qwen3-moe", "mistral-window", "mixtral-window", "ministral",
    "phi3-window", "starcoder2-window", "gemma", "gemma2", "gemma2-capped", "gemma3", "gpt-oss", "cohere",
    "cohere2", "olmo2", "olmo3", "exaone4", "llama4", "deepseek-v2", "deepseek-v3", "minicpm3", "glm4-moe-lite",
    "phi", "granite", "gpt-neox", "smollm3", "glm", "gpt2",
]
# refused when the engine is built, by what the model does on a few tokens (star.probe)
REFUSED_BY_BEHAVIOUR = {
    "diffllama": "calls attention more than once in a layer",
    "recurrent-gemma": "2 of 3 layers without softmax attention",
    "nemotron": "does not hand the engine's state to its attention layers",
}
# refused before any weight is read: from the config and class, or by what the model does on the
# meta device (no weights); the families above too
REFUSED_BEFORE_LOADING = {
    **REFUSED_BY_BEHAVIOUR,
    "falcon": "computes attention inside its own layers",
    "gptj": "computes attention inside its own layers",
    "gpt-neo": "computes attention inside its own layers",
    "codegen": "computes attention inside its own layers",
    "stablelm": "computes attention inside its own layers",
    "bloom": "computes attention inside its own layers",
    "mpt": "computes attention inside its own layers",
    "qwen3-next": "linear attention layers",
    "jamba": "linear attention layers",
}


def transformers_greedy(reference, doc, question) -> list[int]:
    ids = torch.cat([doc, question])[None]
    with torch.no_grad():
        out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                                 do_sample=False, pad_token_id=None, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def engine_greedy(engine, doc, question, partition) -> list[int]:
    engine.encode_context(doc, partition)
    tokens, _ = engine.answer(question.tolist(), max_new_tokens=NEW, loop_guard=False)
    return tokens


@pytest.mark.parametrize("family", EXACT)
def test_family_is_exact(family):
    reference, star = family_pair(family)
    doc, question = random_ids(DOCUMENT, 1), random_ids(QUESTION, 2)
    want = transformers_greedy(reference, doc, question)
    eager = StarEngine(star, kernel="math")
    assert engine_greedy(eager, doc, question, plan_partition("dense", DOCUMENT)) == want
    assert engine_greedy(eager, doc, question, plan_star(DOCUMENT, 1, block_size=512)) == want
    fixed = StarEngine(star, kernel="math", decode="static")
    assert engine_greedy(fixed, doc, question, plan_partition("dense", DOCUMENT)) == want
    blocks = engine_greedy(eager, doc, question, plan_star(DOCUMENT, 1, block_size=128, relay=128))
    assert len(blocks) == NEW


@pytest.mark.parametrize("family", ["gemma2", "mistral-window", "llama4", "deepseek-v2", "gpt-oss"])
def test_family_with_passes_and_the_cpu_kernel(family):
    """Dense in passes of 128 tokens (earlier passes' KV through the window) and the CPU's fused
    kernel where the window allows it: still transformers' answer."""
    reference, star = family_pair(family)
    doc, question = random_ids(DOCUMENT, 3), random_ids(QUESTION, 4)
    want = transformers_greedy(reference, doc, question)
    engine = StarEngine(star, kernel="cpu-flash", pass_tokens=128)
    assert engine_greedy(engine, doc, question, plan_partition("dense", DOCUMENT)) == want


def split_kv_reference(q, segments, scale):
    """What split_kv.split_kv_attention computes (its Triton kernels need CUDA), by its segments'
    rules written out: valid keys, bottom-right causal, the window by the first query's slot."""
    s = q.shape[2]
    scores, values = [], []
    for seg in segments:
        n = seg.keys.shape[2] if seg.valid is None else int(seg.valid)
        keys = seg.keys[:, :, :n].double().repeat_interleave(q.shape[1] // seg.keys.shape[1], 1)
        part = (q.double() @ keys.transpose(-1, -2)) * scale
        slots, rows = torch.arange(n)[None, :], torch.arange(s)[:, None]
        if seg.causal:
            part = part.masked_fill(slots > n - s + rows, float("-inf"))
        if seg.window is not None:
            part = part.masked_fill(slots <= int(seg.first_query) + rows - seg.window, float("-inf"))
        scores.append(part)
        values.append(seg.values[:, :, :n].double().repeat_interleave(q.shape[1] // seg.keys.shape[1], 1))
    scores = torch.cat(scores, -1)
    lse = torch.logsumexp(scores, -1)
    return (torch.softmax(scores, -1) @ torch.cat(values, 2)).to(q.dtype), lse.float()


@pytest.mark.parametrize("family", ["mistral-window", "gemma3", "gpt-oss", "qwen2-window", "llama"])
@pytest.mark.parametrize("decode", ["eager", "static"])
@pytest.mark.parametrize("question_tokens", [QUESTION, 120])
def test_phase_two_through_the_split_kv_segments(family, decode, question_tokens, monkeypatch):
    """Phase 2 as CUDA runs it (the question's prefill and the fixed-shape step through the split-KV
    kernels; window layers read only the document's last window, and a question longer than the
    window leaves its own first tokens behind), with the kernels' rules in torch: transformers'
    answer. The kernels themselves are checked against float64 on the GPU."""
    from starcli.star import split_kv

    calls = []

    def reference(q, segments, scale):
        calls.append([seg.window for seg in segments])
        return split_kv_reference(q, segments, scale)

    monkeypatch.setattr(split_kv, "split_kv_attention", reference)
    monkeypatch.setattr(split_kv, "available", lambda device: True)
    reference_model, star = family_pair(family)
    doc, question = random_ids(DOCUMENT, 5), random_ids(question_tokens, 6)
    want = transformers_greedy(reference_model, doc, question)
    engine = StarEngine(star, kernel="math", decode=decode)
    assert engine_greedy(engine, doc, question, plan_partition("dense", DOCUMENT)) == want
    assert engine_greedy(engine, doc, question, plan_star(DOCUMENT, 1, block_size=128, relay=128)) is not None
    windowed = any(w is not None for segs in calls for w in segs)
    assert calls and windowed == (family != "llama")


@pytest.mark.parametrize("family", sorted(REFUSED_BY_BEHAVIOUR))
def test_family_refused_by_what_it_does(family):
    attention.register()
    model = AutoModelForCausalLM.from_config(family_config(family), attn_implementation="star").eval()
    with pytest.raises(EngineError) as refused:
        StarEngine(model, kernel="math")
    message = str(refused.value)
    assert REFUSED_BY_BEHAVIOUR[family] in message and repr(family_config(family).model_type) in message
    assert "\n" not in message


@pytest.mark.parametrize("family", sorted(REFUSED_BEFORE_LOADING))
def test_family_refused_before_loading(family, tmp_path):
    """Only config.json in the folder: the refusal cannot have read any weight."""
    family_config(family).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as refused:
        check_family(ModelSpec(name=family, kind="directory", path=tmp_path))
    message = str(refused.value)
    assert REFUSED_BEFORE_LOADING[family] in message and repr(family_config(family).model_type) in message
    assert "\n" not in message


def test_the_cli_refuses_a_family_in_one_line_before_reading_weights(tmp_path):
    """``starcli ask --model`` on a Falcon folder whose weights file is garbage: the refusal names
    the family and comes before the weights would have failed to load."""
    import os
    import subprocess
    import sys

    from starcli.tools.random_model import byte_tokenizer

    model = tmp_path / "falcon"
    family_config("falcon").save_pretrained(model)
    byte_tokenizer().save_pretrained(model)
    (model / "model.safetensors").write_bytes(b"\0" * 1024)
    (tmp_path / "doc.txt").write_text("a short document")
    env = {**os.environ, "NO_COLOR": "1", "STARCLI_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "starcli", "ask", str(tmp_path / "doc.txt"), "q?", "--model", str(model),
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("starcli: error: ") and "'falcon' computes attention inside its own layers" in lines[-1]
    assert "Traceback" not in done.stderr and done.stdout == ""
