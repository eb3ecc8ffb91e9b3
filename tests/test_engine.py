"""The engine against independent references on tiny random models (float32, CPU).

Tolerances: float32 end to end; the engine and the reference differ only in summation order, so
logits agree to ~1e-6 and KV to ~1e-6. We assert 1e-4 (absolute and relative) to leave headroom
for kernel differences while still catching any masking or position error (those are O(1e-2+)).
"""

import pytest
import torch
from transformers import DynamicCache

from starcli.star.engine import EngineError, StarEngine
from starcli.star.partition import plan_partition, plan_star

from .tiny import random_ids, tiny_pair

TOL = dict(atol=1e-4, rtol=1e-4)
FAMILIES = ["qwen2", "llama", "mistral", "qwen3"]


def reference_logits(reference, doc, question):
    with torch.no_grad():
        return reference(torch.cat([doc, question])[None]).logits[0, -1]


def reference_greedy(reference, doc, question, n):
    """Greedy continuation by full recomputation each step (no cache): the plainest reference."""
    seq, out = torch.cat([doc, question]), []
    with torch.no_grad():
        for _ in range(n):
            token = int(reference(seq[None]).logits[0, -1].argmax())
            out.append(token)
            seq = torch.cat([seq, torch.tensor([token])])
    return out


def engine_logits(engine, doc, partition, question):
    engine.encode_context(doc, partition)
    captured = {}

    def first(token):
        return True

    original = engine._step

    def spy(ids, position):
        logits = original(ids, position)
        captured.setdefault("logits", logits.clone())
        return logits

    engine._step = spy
    try:
        engine.answer(question.tolist(), max_new_tokens=1, on_token=first)
    finally:
        engine._step = original
    return captured["logits"]


@pytest.mark.parametrize("family", FAMILIES)
def test_star_with_one_block_equals_dense(family):
    reference, star = tiny_pair(family)
    doc, question = random_ids(150, 1), random_ids(6, 2)
    engine = StarEngine(star, kernel="math")
    partition = plan_star(150, 1, block_size=256)
    torch.testing.assert_close(engine_logits(engine, doc, partition, question), reference_logits(reference, doc, question), **TOL)
    engine.encode_context(doc, partition)
    tokens, _ = engine.answer(question.tolist(), max_new_tokens=8)
    assert tokens == reference_greedy(reference, doc, question, 8)


@pytest.mark.parametrize("kernel", ["math", "cpu-flash"])
@pytest.mark.parametrize("pass_tokens", [1000, 64])
def test_dense_mode_equals_full_attention(kernel, pass_tokens):
    reference, star = tiny_pair("llama")
    doc, question = random_ids(200, 3), random_ids(5, 4)
    engine = StarEngine(star, kernel=kernel, pass_tokens=pass_tokens)
    got = engine_logits(engine, doc, plan_partition("dense", 200), question)
    torch.testing.assert_close(got, reference_logits(reference, doc, question), **TOL)


def naive_star_kv(reference, doc, block_size, anchor_size):
    """The paper's phase 1 literally: one forward per [anchor; block], the anchor's KV dropped."""
    keys, values = None, None
    for start in range(0, doc.numel(), block_size):
        end = min(start + block_size, doc.numel())
        block = doc[start:end]
        if start == 0:
            ids, positions, drop = block, torch.arange(block.numel()), 0
        else:
            ids = torch.cat([doc[:anchor_size], block])
            positions = torch.cat([torch.arange(anchor_size), torch.arange(start, end)])
            drop = anchor_size
        cache = DynamicCache()
        with torch.no_grad():
            reference(ids[None], position_ids=positions[None], past_key_values=cache, use_cache=True)
        k = [layer.keys[:, :, drop:] for layer in cache.layers]
        v = [layer.values[:, :, drop:] for layer in cache.layers]
        keys = k if keys is None else [torch.cat([a, b], 2) for a, b in zip(keys, k)]
        values = v if values is None else [torch.cat([a, b], 2) for a, b in zip(values, v)]
    return keys, values


def naive_answer(reference, keys, values, num_doc, question, n):
    """Phase 2 literally: global attention over the concatenated block KV, greedy."""
    cache = DynamicCache()
    for layer, (k, v) in enumerate(zip(keys, values)):
        cache.update(k.clone(), v.clone(), layer)
    ids, position, out, first_logits = question, num_doc, [], None
    with torch.no_grad():
        for _ in range(n):
            positions = torch.arange(position, position + ids.numel())
            logits = reference(ids[None], position_ids=positions[None], past_key_values=cache, use_cache=True).logits[0, -1]
            first_logits = logits if first_logits is None else first_logits
            token = int(logits.argmax())
            out.append(token)
            position += ids.numel()
            ids = torch.tensor([token])
    return out, first_logits


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize(
    "n,block,anchor,pass_tokens",
    [(256, 64, 64, 10_000), (250, 64, 64, 10_000), (300, 64, 16, 10_000), (300, 64, 16, 64), (40, 64, 64, 10_000)],
)
def test_star_equals_naive_paper_implementation(family, n, block, anchor, pass_tokens):
    reference, star = tiny_pair(family)
    doc, question = random_ids(n, 5), random_ids(4, 6)
    engine = StarEngine(star, kernel="cpu-flash", pass_tokens=pass_tokens)
    partition = plan_star(n, 1, block_size=block, anchor_size=anchor)
    engine.encode_context(doc, partition)
    keys, values = naive_star_kv(reference, doc, block, min(anchor, n))
    for layer, (k, v) in enumerate(zip(keys, values)):
        got_k, got_v = engine.state.document.read(layer)
        torch.testing.assert_close(got_k, k, **TOL)
        torch.testing.assert_close(got_v, v, **TOL)
    expected, expected_logits = naive_answer(reference, keys, values, n, question, 6)
    tokens, stats = engine.answer(question.tolist(), max_new_tokens=6)
    assert tokens == expected
    assert stats.question_tokens == 4


def test_one_token_question_and_repeated_questions_reuse_the_encoding():
    reference, star = tiny_pair("qwen2")
    doc = random_ids(130, 7)
    engine = StarEngine(star, kernel="math")
    engine.encode_context(doc, plan_star(130, 1, block_size=256))
    for question in (random_ids(1, 8), random_ids(3, 9), random_ids(1, 8)):
        tokens, _ = engine.answer(question.tolist(), max_new_tokens=5)
        assert tokens == reference_greedy(reference, doc, question, 5)


def test_empty_question_and_bad_settings_are_rejected():
    _, star = tiny_pair("qwen2")
    engine = StarEngine(star, kernel="math")
    with pytest.raises(EngineError, match="before answer"):
        engine.answer([1], max_new_tokens=3)
    engine.encode_context(random_ids(20, 1), plan_star(20, 1))
    with pytest.raises(EngineError, match="empty"):
        engine.answer([], max_new_tokens=3)
    with pytest.raises(EngineError, match="max_new_tokens"):
        engine.answer([1], max_new_tokens=0)


def test_model_loaded_without_star_attention_is_refused():
    reference, _ = tiny_pair("qwen2")
    with pytest.raises(EngineError, match="attn_implementation"):
        StarEngine(reference)


def test_stop_tokens_and_stop_callback():
    reference, star = tiny_pair("qwen2")
    doc, question = random_ids(50, 1), random_ids(3, 2)
    engine = StarEngine(star, kernel="math")
    engine.encode_context(doc, plan_star(50, 1))
    free, _ = engine.answer(question.tolist(), max_new_tokens=6)
    stopped, stats = engine.answer(question.tolist(), max_new_tokens=6, stop_token_ids={free[2]})
    assert stopped == free[: free.index(free[2])] and stats.stop_reason == "end of turn"
    seen = []
    cut, stats = engine.answer(question.tolist(), max_new_tokens=6, on_token=lambda t: seen.append(t) or len(seen) == 2)
    assert cut == free[:2] and stats.stop_reason == "stop string"


def test_the_loop_guard_ends_an_answer_that_repeats_itself_unless_turned_off(monkeypatch):
    _, star = tiny_pair("qwen2")
    engine = StarEngine(star, kernel="math")
    engine.encode_context(random_ids(40, 1), plan_star(40, 1))
    cycle = iter([])

    def looping_choice(logits, sampler):  # an answer that says the same five tokens over and over
        return next(cycle)

    monkeypatch.setattr(engine, "_choose", looping_choice)
    cycle = iter([11, 12, 13, 14, 15] * 40)
    tokens, stats = engine.answer([1, 2], max_new_tokens=100)
    # stopped as soon as the loop covers the guard's minimum span (48 tokens, >= 3 periods)
    assert stats.stop_reason == "repetition" and len(tokens) == 48
    cycle = iter([11, 12, 13, 14, 15] * 40)
    tokens, stats = engine.answer([1, 2], max_new_tokens=100, loop_guard=False)
    assert stats.stop_reason == "max new tokens" and len(tokens) == 100


def test_follow_up_turn_continues_after_the_answer():
    reference, star = tiny_pair("qwen2")
    doc, first, second = random_ids(120, 1), random_ids(4, 2), random_ids(3, 3)
    engine = StarEngine(star, kernel="math")
    engine.encode_context(doc, plan_star(120, 1, block_size=64))
    answer1, _ = engine.answer(first.tolist(), max_new_tokens=4)
    answer2, _ = engine.answer(second.tolist(), max_new_tokens=4, keep_history=True)
    # the same as a naive run over document + question + answer + follow-up
    keys, values = naive_star_kv(reference, doc, 64, 64)
    conversation = torch.cat([first, torch.tensor(answer1), second])
    expected, _ = naive_answer(reference, keys, values, 120, conversation, 4)
    assert answer2 == expected
    # a fresh question forgets the conversation
    fresh, _ = engine.answer(second.tolist(), max_new_tokens=4)
    assert fresh == naive_answer(reference, keys, values, 120, second, 4)[0]


def masked_reference(reference, allowed: torch.Tensor, ids: torch.Tensor):
    """One forward of ``reference``'s weights in which token t attends to the tokens s with
    ``allowed[t, s]`` (explicit softmax in float64): (K and V per layer, last logits). The plainest
    statement of a block pattern, independent of the engine's passes, buffers and merges."""
    from transformers import AttentionInterface, AutoModelForCausalLM

    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def masked(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kwargs):
        captured[module.layer_idx] = (k, v)
        groups = q.shape[1] // k.shape[1]
        kk, vv = k.repeat_interleave(groups, 1).double(), v.repeat_interleave(groups, 1).double()
        scores = (q.double() @ kk.transpose(-1, -2)) * (scaling or q.shape[-1] ** -0.5)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return (weights @ vv).to(q.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("test_masked", masked)
    model = AutoModelForCausalLM.from_config(reference.config, attn_implementation="test_masked").eval()
    model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        logits = model(ids[None]).logits[0, -1]
    return [captured[i] for i in sorted(captured)], logits


def star_pattern(partition, total: int) -> torch.Tensor:
    """allowed[t, s] for star with relay: a block's token sees the anchor, the relayed tokens before
    the block and, causally, its own block; tokens after the document see everything before them."""
    allowed = torch.ones(total, total).tril().bool()
    n = partition.num_tokens
    allowed[:n, :n] = False
    for block in partition.blocks:
        rows = slice(block.start, block.end)
        allowed[rows, block.start : block.end] = torch.ones(block.length, block.length).tril().bool()
        if block.index:
            allowed[rows, : partition.anchor_size] = True
            allowed[rows, block.start - block.relay : block.start] = True
    return allowed


@pytest.mark.parametrize(
    "n,block,anchor,relay,pass_tokens",
    [
        (300, 64, 64, 16, 10_000),  # block 1 relays nothing: the anchor already holds block 0
        (300, 64, 32, 16, 10_000),  # block 1 relays 16 of block 0's tokens past the anchor
        (300, 64, 16, 64, 10_000),  # the whole previous block (block 1: all but the anchor)
        (300, 64, 16, 40, 64),  # a short last block, one block per pass
        (300, 64, 16, 1000, 150),  # relay capped at the previous block; two blocks per pass
    ],
)
def test_relay_equals_the_masked_reference(n, block, anchor, relay, pass_tokens):
    reference, star = tiny_pair("qwen2")
    doc, question = random_ids(n, 9), random_ids(4, 10)
    partition = plan_star(n, 1, block_size=block, anchor_size=anchor, relay=relay)
    assert any(b.relay for b in partition.blocks)
    assert all(b.relay <= partition.blocks[b.index - 1].length for b in partition.blocks if b.index)
    engine = StarEngine(star, kernel="cpu-flash", pass_tokens=pass_tokens)
    got_logits = engine_logits(engine, doc, partition, question)
    total = n + question.numel()
    kv, logits = masked_reference(reference, star_pattern(partition, total), torch.cat([doc, question]))
    for layer, (k, v) in enumerate(kv):
        got_k, got_v = engine.state.document.read(layer)
        torch.testing.assert_close(got_k, k[:, :, :n], **TOL)
        torch.testing.assert_close(got_v, v[:, :, :n], **TOL)
    torch.testing.assert_close(got_logits, logits, **TOL)
    # without relay the same reference gives plain star: the test would catch a relay that did nothing
    plain = plan_star(n, 1, block_size=block, anchor_size=anchor)
    plain_kv, _ = masked_reference(reference, star_pattern(plain, total), torch.cat([doc, question]))
    assert not torch.allclose(plain_kv[-1][0][:, :, :n], kv[-1][0][:, :, :n], **TOL)


def test_relay_settings_are_checked():
    from starcli.star.partition import PartitionError

    with pytest.raises(PartitionError, match="negative"):
        plan_star(300, 1, block_size=64, relay=-1)


@pytest.mark.parametrize("family", ["qwen2", "mistral-window", "gemma3", "gpt-oss"])
@pytest.mark.parametrize("decode", ["eager", "static"])
@pytest.mark.parametrize("pass_tokens", [None, 128])
def test_first_question_encoded_with_the_document_answers_the_same(family, decode, pass_tokens):
    """Dense phase 1 with the first question in its last pass: the same answers (that one, a second
    question, a follow-up turn) as a separate prefill, the same document KV, and no prefill forward."""
    from .tiny import family_pair

    _, star = family_pair(family)
    doc, question, other = random_ids(400, 1), random_ids(6, 2).tolist(), random_ids(5, 3).tolist()
    options = dict(kernel="math", decode=decode) | ({"pass_tokens": pass_tokens} if pass_tokens else {})
    results = []
    for along in (None, question):
        engine = StarEngine(star, **options)
        engine.encode_context(doc, plan_partition("dense", 400), question_ids=along)
        kv = {name: t.clone() for name, t in engine.export_document_kv().items()}
        stepped = []
        step = engine._step
        engine._step = lambda ids, position: stepped.append(len(ids)) or step(ids, position)
        answers = [engine.answer(question, max_new_tokens=8)[0]]
        prefilled = stepped[:1]
        answers.append(engine.answer(other, max_new_tokens=8)[0])
        answers.append(engine.answer(question, max_new_tokens=6, keep_history=True)[0])
        results.append((answers, kv, prefilled))
    (separate, kv, prefilled), (along, kv_along, prefilled_along) = results
    assert along == separate
    assert kv.keys() == kv_along.keys() and all(torch.allclose(kv[n], kv_along[n], rtol=1e-4, atol=1e-4) for n in kv)
    assert all(t.shape[2] == 400 for t in kv_along.values())
    assert prefilled == [len(question)] and prefilled_along != [len(question)]


def test_a_question_encoded_with_the_document_serves_only_that_question_first():
    _, star = tiny_pair("qwen2")
    doc, question = random_ids(300, 1), random_ids(6, 2).tolist()
    engine = StarEngine(star, kernel="math")
    engine.encode_context(doc, plan_partition("dense", 300), question_ids=question)
    stepped = []
    step = engine._step
    engine._step = lambda ids, position: stepped.append(len(ids)) or step(ids, position)
    other = random_ids(4, 3).tolist()
    engine.answer(other, max_new_tokens=3)
    assert stepped[0] == len(other)  # prefilled: the encoded question was another one
    stepped.clear()
    engine.answer(question, max_new_tokens=3)
    assert stepped[0] == len(question)  # no longer held: it serves the first answer only
    star_engine = StarEngine(star, kernel="math")
    star_engine.encode_context(doc, plan_partition("star", 300, 1, 128), question_ids=question)
    assert star_engine._encoded_question is None  # star: the question is prefilled after phase 1
