"""The accuracy suite: task generators sized with a real tokenizer, the JSONL reader, scoring, the
runner on a tiny random model, and the ``eval`` command with the model loader stubbed out."""

from __future__ import annotations

import collections
import json
import re

import pytest
import torch
import typer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from starcli.tools.evals import words
from starcli.cli.bench_eval import evaluate as eval_command
from starcli.run.session import Session
from starcli.star.comm import Comm
from starcli.tools.evals.data import EvalDataError, read_jsonl, score, write_jsonl
from starcli.tools.evals.runner import format_table, make_configs, run_eval
from starcli.tools.evals.tasks import TASKS, Sample, TaskError, family_of, generate
from starcli.ingest.prompt import build_prompt

from .tiny import VOCAB, tiny_pair

# Generators must land at or below the target (the whole prompt plus the answer budget fits the
# window) and within one unit of it; 10% covers the coarsest unit (a prose sentence or a
# biography) at 1K tokens.
LENGTH_TOLERANCE = 0.10


def _byte_level(tok: Tokenizer) -> PreTrainedTokenizerFast:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE trained in a few milliseconds on the generators' own vocabulary, so that
    words are one or a few tokens as with a real model's tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [
        " ".join(words.WORDS),
        " ".join(words.FILLER_SENTENCES),
        " ".join(words.FIRST_NAMES + words.LAST_NAMES + words.CITIES + words.OCCUPATIONS + words.HOBBIES),
        "0123456789 .,:;?!- The special magic number for is VAR",
    ]
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer)
    return _byte_level(tok)


@pytest.fixture(scope="module")
def byte_tokenizer():
    """Plain bytes (256 ids, no merges): fits the tiny model's vocabulary."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    assert tok.get_vocab_size() == VOCAB
    return _byte_level(tok)


def prompt_tokens(tokenizer, sample: Sample) -> int:
    parts = build_prompt(tokenizer, sample.context, sample.question)
    return len(parts.document_ids) + len(parts.question_ids)


# --- generators ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1024, 4096])
@pytest.mark.parametrize("task", list(TASKS))
def test_generator_hits_target_length(tokenizer, task, length):
    samples = generate(task, length, 2, seed=0, tokenizer=tokenizer)
    assert len(samples) == 2
    for sample in samples:
        total = prompt_tokens(tokenizer, sample) + sample.max_new_tokens
        assert (1 - LENGTH_TOLERANCE) * length <= total <= length, (task, length, total)
        assert sample.task == task and sample.length == length
        assert sample.answers and sample.question


def _needle_values(context: str) -> dict[str, list[str]]:
    found = collections.defaultdict(list)
    for key, value in re.findall(r"The special magic number for (\S+) is (\d{7})\.", context):
        found[key].append(value)
    return found


def _asked_keys(question: str) -> list[str]:
    return re.findall(r"[a-z]+-[a-z]+", question)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_niah_needles_are_in_the_context(tokenizer, seed):
    for task in ("niah_single", "niah_prose"):
        (sample,) = generate(task, 2048, 1, seed, tokenizer)
        needles = _needle_values(sample.context)
        (key,) = _asked_keys(sample.question)
        assert needles == {key: sample.answers}
    (sample,) = generate("niah_multikey", 2048, 1, seed, tokenizer)
    needles = _needle_values(sample.context)
    (key,) = _asked_keys(sample.question)
    assert len(needles) == 4 and needles[key] == sample.answers
    (sample,) = generate("niah_multivalue", 2048, 1, seed, tokenizer)
    needles = _needle_values(sample.context)
    (key,) = _asked_keys(sample.question)
    assert list(needles) == [key] and sorted(needles[key]) == sorted(sample.answers) and len(sample.answers) == 4
    (sample,) = generate("niah_multiquery", 2048, 1, seed, tokenizer)
    needles = _needle_values(sample.context)
    keys = _asked_keys(sample.question)
    assert len(keys) == 4 and [needles[k][0] for k in keys] == sample.answers


def test_niah_prose_haystack_is_real_prose(tokenizer):
    (sample,) = generate("niah_prose", 2048, 1, 0, tokenizer)
    assert not any(sentence in sample.context for sentence in words.FILLER_SENTENCES)
    # a documentation text, not a repeated pattern
    sentences = re.split(r"(?<=\.)\s+", sample.context)
    assert len(set(sentences)) > 0.9 * len(sentences)


def test_niah_needle_depth_varies(tokenizer):
    depths = []
    for sample in generate("niah_single", 2048, 6, 0, tokenizer):
        depths.append(sample.context.index("special magic number") / len(sample.context))
    assert max(depths) - min(depths) > 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_vt_chain_is_in_order(tokenizer, seed):
    (sample,) = generate("vt", 2048, 1, seed, tokenizer)
    value = re.search(r"value (\d+)", sample.question).group(1)
    names = sample.answers
    assert len(names) == 5
    position = sample.context.index(f"VAR {names[0]} = {value}.")
    for earlier, later in zip(names, names[1:]):
        next_position = sample.context.index(f"VAR {later} = VAR {earlier}.")
        assert next_position > position
        position = next_position
    assert len(re.findall(r"VAR [A-Z]{5} =", sample.context)) == 5


@pytest.mark.parametrize("length", [1024, 8192])
def test_cwe_answers_are_the_most_common_words(tokenizer, length):
    (sample,) = generate("cwe", length, 1, 0, tokenizer)
    counts = collections.Counter(re.findall(r"\d+\. (\S+)", sample.context))
    top = counts.most_common()
    assert len(sample.answers) == 10
    assert {word for word, _ in top[:10]} == set(sample.answers)
    assert top[9][1] > top[10][1]


def test_fwe_answers_are_the_three_most_frequent(tokenizer):
    (sample,) = generate("fwe", 2048, 1, 0, tokenizer)
    text = sample.context.split("\n", 1)[1]
    top = collections.Counter(text.split()).most_common(4)
    assert [word for word, _ in top[:3]] == sample.answers
    assert top[0][1] > top[1][1] > top[2][1] > top[3][1]


def test_qa_answer_is_the_fact_of_the_asked_person(tokenizer):
    for sample in generate("qa", 2048, 6, 0, tokenizer):
        name = re.search(r"(?:was|did) (.+?) (?:born|work)", sample.question).group(1)
        (paragraph,) = [line for line in sample.context.splitlines() if line.startswith(f"{name} was born")]
        assert sample.answers[0] in paragraph
        names = [line.split(" was born")[0] for line in sample.context.splitlines() if " was born" in line]
        assert len(names) == len(set(names))


def test_generation_is_deterministic(tokenizer):
    for task in TASKS:
        first = generate(task, 1024, 2, 7, tokenizer)
        again = generate(task, 1024, 2, 7, tokenizer)
        other = generate(task, 1024, 2, 8, tokenizer)
        assert first == again
        assert [s.context for s in first] != [s.context for s in other]
        assert first[0].context != first[1].context
        assert len({s.id for s in first + other}) == 4


def test_generate_rejects_impossible_requests(tokenizer):
    with pytest.raises(TaskError, match="unknown task"):
        generate("nope", 1024, 1, 0, tokenizer)
    with pytest.raises(TaskError, match="cwe at 300 tokens"):
        generate("cwe", 300, 1, 0, tokenizer)
    with pytest.raises(TaskError, match="positive"):
        generate("vt", 0, 1, 0, tokenizer)


def test_families():
    assert {family_of(t) for t in TASKS} == {"niah", "vt", "aggregation", "qa"}
    assert family_of("my_own_task") == "my_own_task"


# --- data and scoring ------------------------------------------------------------------------------


def test_score_is_the_fraction_of_answers_found():
    assert score("The number is 1234567.", ["1234567"]) == 1.0
    assert score("APPLE and pear", ["apple", "Pear", "plum", "fig"]) == 0.5
    assert score("nothing", ["1234567"]) == 0.0
    assert score("anything", []) == 0.0


def _record(**overrides) -> dict:
    record = dict(id="a", task="niah_single", length=1024, context="ctx", question="q?", answers=["1"], max_new_tokens=8)
    record.update(overrides)
    return record


def test_jsonl_round_trip(tmp_path, tokenizer):
    samples = generate("niah_single", 1024, 2, 0, tokenizer)
    path = tmp_path / "suite.jsonl"
    write_jsonl(samples, path)
    path.write_text(path.read_text() + "\n\n")  # trailing blank lines are fine
    assert read_jsonl(path) == samples


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"data.jsonl:2: not valid JSON"),
        ("[1, 2]", r"data.jsonl:2: expected a JSON object"),
        (json.dumps({k: v for k, v in _record().items() if k != "answers"}), r"data.jsonl:2: missing field answers"),
        (json.dumps({"id": "b"}), r"data.jsonl:2: missing fields task, length"),
        (json.dumps(_record(id="b", answers=[])), r"data.jsonl:2: field 'answers' must be a non-empty list"),
        (json.dumps(_record(id="b", length="4k")), r"data.jsonl:2: field 'length' must be a positive integer"),
        (json.dumps(_record(id="b", max_new_tokens=True)), r"data.jsonl:2: field 'max_new_tokens'"),
        (json.dumps(_record(id="a")), r"data.jsonl:2: id 'a' already used on line 1"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_record()) + "\n" + line + "\n")
    with pytest.raises(EvalDataError, match=message) as info:
        read_jsonl(path)
    assert "\n" not in str(info.value)


def test_jsonl_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalDataError, match="no samples"):
        read_jsonl(empty)
    with pytest.raises(EvalDataError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl")


# --- runner ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_star():
    return tiny_pair("qwen2")[1]


def test_config_labels():
    labels = [c.label for c in make_configs([("dense", None, None), ("star", None, None), ("star", 512, None), ("star", 512, 128), ("dense", 64, 64)])]
    assert labels == ["dense", "star b=N/4 a=b", "star b=512 a=512", "star b=512 a=128"]
    with pytest.raises(ValueError, match="--attention must be"):
        make_configs([("sparse", None, None)])
    star_variants = make_configs([("star", None, None, 0), ("star", None, None, 256), ("dense", None, None, 256)])
    assert [c.label for c in star_variants] == ["star b=N/4 a=b r=0", "star b=N/4 a=b r=256", "dense"]


def test_run_eval_on_a_tiny_model(tiny_star, byte_tokenizer):
    samples = generate("niah_single", 512, 2, 0, byte_tokenizer) + generate("vt", 512, 1, 0, byte_tokenizer)
    for sample in samples:
        sample.max_new_tokens = 6  # random weights never stop; a few tokens show the path works
    seen = []
    configs = [("dense", None, None), ("star", 512, None), ("star", 128, 64)]
    results = run_eval(Session(tiny_star, byte_tokenizer, Comm()), samples, configs, on_sample=seen.append)
    assert results["configs"] == ["dense", "star b=512 a=512", "star b=128 a=64"]
    records = results["samples"]
    assert seen == records and len(records) == 3 * 3
    for record in records:
        assert set(record) >= {"id", "task", "family", "length", "config", "output", "score", "seconds"}
        assert 0.0 <= record["score"] <= 1.0 and record["seconds"] > 0 and record["output_tokens"] == 6
    by = {(r["id"], r["config"]): r for r in records}
    for sample in samples:
        # one block as long as the document: star attention is dense attention
        assert by[sample.id, "star b=512 a=512"]["blocks"] == 1
        assert by[sample.id, "star b=512 a=512"]["output"] == by[sample.id, "dense"]["output"]
        assert by[sample.id, "star b=128 a=64"]["blocks"] > 1
    json.loads(json.dumps(results))  # serialisable as is

    tasks = {(r["task"], r["config"]): r for r in results["tasks"]}
    assert tasks["niah_single", "dense"]["samples"] == 2 and tasks["vt", "dense"]["samples"] == 1
    families = {(r["family"], r["config"]) for r in results["families"]}
    assert families == {(f, c) for f in ("niah", "vt") for c in results["configs"]}
    assert [r["config"] for r in results["ratios"]] == results["configs"][1:]
    table = format_table(results)
    for needle in ("niah_single", "vt", "average", "star b=128 a=64", "ratio"):
        assert needle in table


def test_run_eval_through_a_chat_template():
    """The prompt path of real chat models: template around the document, end of turn stops."""
    from transformers import AutoModelForCausalLM

    from starcli.tools.random_model import byte_tokenizer

    from .tiny import tiny_config

    tokenizer = byte_tokenizer()
    config = tiny_config("qwen2")
    config.vocab_size = len(tokenizer) + 4
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="star").eval()
    samples = generate("qa", 768, 2, 0, tokenizer)
    results = run_eval(Session(model, tokenizer, Comm()), samples, [("dense", None, None), ("star", 1024, None)])
    outputs = collections.defaultdict(dict)
    for record in results["samples"]:
        assert 0 < record["output_tokens"] and record["prompt_tokens"] + record["output_tokens"] <= 768
        outputs[record["id"]][record["config"]] = record["output"]
    assert all(by["dense"] == by["star b=1024 a=1024"] for by in outputs.values())
    assert "<|im_start|>" in tokenizer.decode(build_prompt(tokenizer, samples[0].context, samples[0].question).document_ids)


def test_aggregate_means_and_ratio():
    from starcli.tools.evals.runner import aggregate

    def rec(task, config, value):
        return {"task": task, "length": 2048, "config": config, "score": value}

    records = [
        rec("niah_single", "dense", 1.0),
        rec("niah_single", "dense", 1.0),
        rec("niah_multikey", "dense", 0.0),
        rec("vt", "dense", 0.5),
        rec("niah_single", "star", 1.0),
        rec("niah_single", "star", 0.0),
        rec("niah_multikey", "star", 0.0),
        rec("vt", "star", 0.5),
    ]
    result = aggregate(records, ["dense", "star"])
    family = {(r["family"], r["config"]): r["accuracy"] for r in result["families"]}
    assert family["niah", "dense"] == 0.5  # mean of task means (1.0, 0.0), not of the 3 samples
    assert family["niah", "star"] == 0.25
    averages = {r["config"]: r["accuracy"] for r in result["averages"]}
    assert averages == {"dense": 0.5, "star": 0.375}
    (ratio,) = result["ratios"]
    assert ratio["ratio"] == pytest.approx(0.75)


# --- command ---------------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # two commands keep "eval" as a named subcommand
    return app


@pytest.fixture
def fake_models(monkeypatch, tiny_star, byte_tokenizer):
    """The model loader replaced by the tiny model: the command's own logic is what is tested."""
    from starcli.model import load, resolve

    monkeypatch.setattr(resolve, "resolve_model", lambda spec=None, **kw: resolve.ModelSpec("tiny", "directory", "/nowhere"))
    monkeypatch.setattr(load, "load_model", lambda spec, **kw: (tiny_star, byte_tokenizer))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lengths", "2x"], "--lengths: cannot read '2x'"),
        (["--tasks", "niah,bogus"], "unknown task 'bogus'"),
        (["--attention", "dense,sparse"], "unknown mode 'sparse'"),
        (["--block-sizes", "512,-1"], "--block-sizes: cannot read '-1'"),
        (["--block-sizes", "256", "--anchor-size", "512"], "must not exceed"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["--kernel", "warp"], "unknown kernel"),
        (["--relays", "1x"], "--relays: cannot read '1x'"),
        (["--rope-scaling", "ntk:2"], "--rope-scaling must be TYPE:FACTOR"),
    ],
)
def test_command_rejects_bad_options(args, message):
    result = CliRunner().invoke(_app(), ["eval", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_command_reports_bad_data(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_record()) + "\n{oops\n")
    result = CliRunner().invoke(_app(), ["eval", "--data", str(path)])
    assert result.exit_code == 1
    assert f"error: {path}:2: not valid JSON" in result.stderr


def test_command_runs_generated_tasks(fake_models, tmp_path):
    out = tmp_path / "results.json"
    args = ["eval", "--tasks", "niah_single", "--lengths", "640", "--samples", "1", "--block-sizes", "auto,128,1k",
            "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    for label in ("dense", "star b=N/4 a=b", "star b=128 a=128", "star b=1024 a=1024", "niah_single"):
        assert label in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].startswith("[4/4] niah_single 640 star b=1024 a=1024: score ")
    saved = json.loads(out.read_text())
    assert saved["model"] == "tiny" and len(saved["samples"]) == 4 and saved["seed"] == 0


def test_command_compares_relays(fake_models, tmp_path):
    out = tmp_path / "results.json"
    args = ["eval", "--tasks", "niah_single", "--lengths", "640", "--samples", "1", "--block-sizes", "128",
            "--relays", "0,64", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["configs"] == ["dense", "star b=128 a=128 r=0", "star b=128 a=128 r=64"]
    by_config = {r["config"]: r for r in saved["samples"]}
    assert by_config["star b=128 a=128 r=64"]["relay"] == 64 and by_config["star b=128 a=128 r=0"]["relay"] == 0
    starts = by_config["star b=128 a=128 r=0"]["block_starts"]
    assert len(starts) > 2 and starts == [128 * i for i in range(len(starts))]


def test_command_json_from_data(fake_models, tmp_path, byte_tokenizer):
    path = tmp_path / "suite.jsonl"
    samples = generate("niah_single", 512, 2, 0, byte_tokenizer)
    custom = Sample("mine", "my_task", 512, "Paris is the capital of France.", "What is the capital of France?", ["Paris"], 4)
    write_jsonl([*samples, custom], path)
    result = CliRunner().invoke(_app(), ["eval", "--data", str(path), "--tasks", "my_task", "--attention", "star", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["id"] for r in report["samples"]] == ["mine"]
    assert report["families"][0]["family"] == "my_task" and report["ratios"] == []


# --- the embedded default model --------------------------------------------------------------------


@pytest.mark.real_model
def test_default_model_solves_niah_single_with_dense_and_star(real_model_cache, monkeypatch):
    """The CI slice: both modes find the needle at about 2K tokens, star over about four blocks in the
    default configuration (relay = block) and as plain star (512-token blocks, no relay)."""
    monkeypatch.setenv("STARCLI_CACHE", real_model_cache)  # convert once per session, not per test
    from starcli.model.resolve import ModelError, resolve_model
    from starcli.run.settings import RunSettings

    try:
        spec = resolve_model(None)
        session = Session.load(RunSettings(device="cpu"), str(spec.path), Comm())
    except ModelError as exc:
        pytest.skip(f"the default model is not installed: {exc}")
    tokenizer = session.tokenizer
    samples = generate("niah_single", 2048, 2, 0, tokenizer)
    results = run_eval(session, samples, [("dense", None, None), ("star", None, None), ("star", 512, None)])
    for record in results["samples"]:
        assert record["score"] == 1.0, record
    star = [r for r in results["samples"] if r["attention"] == "star"]
    assert all(r["blocks"] >= 3 for r in star)
    assert sorted(r["relay"] > 0 for r in star) == [False, False, True, True]
    assert all(r["ratio"] == 1.0 for r in results["ratios"])
