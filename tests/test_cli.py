"""The command line, driven in-process (CliRunner) and as a real subprocess, on a tiny random model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from starcli.cli.main import app

runner = CliRunner()


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("The retry logic lives in net/retry.py. " * 20)
    return path


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def base(model):
    return ["--model", model, "--device", "cpu", "--max-new-tokens", "8"]


def test_ask_streams_answer_and_reports_on_stderr(tiny_model_dir, doc):
    result = invoke("ask", doc, "where is the retry logic?", *base(tiny_model_dir))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    assert "--- starcli report ---" in result.stderr and "phase 1" in result.stderr
    assert "report" not in result.stdout
    # tests pin the bf16 detection off (conftest), so auto is float32 and says why
    assert "dtype          float32 (auto: this CPU has no native bfloat16 matmul)" in result.stderr


def test_report_says_when_the_dtype_was_asked_for(tiny_model_dir, doc):
    result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--dtype", "bfloat16")
    assert result.exit_code == 0, result.stderr
    assert "dtype          bfloat16 (as asked)" in result.stderr


def test_json_output_schema(tiny_model_dir, doc):
    result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--json", "--block-size", "128")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("answers", "document_tokens", "blocks", "block_size", "anchor_size", "attention", "phase1_s", "sources", "model_load_s", "per_rank", "total_s"):
        assert key in data
    assert data["blocks"] > 1 and data["sources"] == [str(doc)]
    answer = data["answers"][0]
    for key in ("question", "answer", "answer_tokens", "question_tokens", "time_to_first_token_s"):
        assert key in answer


def test_quiet_prints_answer_only(tiny_model_dir, doc):
    result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    # the answer itself, nothing more (the tiny model names no sampling defaults: greedy, repeatable)
    answer = json.loads(invoke("ask", doc, "q?", *base(tiny_model_dir), "--json").stdout)["answers"][0]["answer"]
    assert answer.strip() and result.stdout == answer + "\n"


def test_stdin_is_the_source_when_none_is_named(tiny_model_dir):
    piped = invoke("ask", "what changed?", *base(tiny_model_dir), "--json", input="diff --git a/x b/x\n+retry = 3\n")
    assert piped.exit_code == 0, piped.stderr
    assert json.loads(piped.stdout)["sources"] == ["<stdin>"]
    dash = invoke("ask", "-", "what changed?", *base(tiny_model_dir), "--json", input="diff --git a/x b/x\n+retry = 3\n")
    assert json.loads(dash.stdout)["answers"][0]["answer"] == json.loads(piped.stdout)["answers"][0]["answer"]


def test_attention_modes_agree_when_one_block(tiny_model_dir, doc):
    answers = set()
    for mode in ("dense", "star", "ring"):
        result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--attention", mode, "--json", "--block-size", "4096")
        assert result.exit_code == 0, result.stderr
        answers.add(json.loads(result.stdout)["answers"][0]["answer"])
    assert len(answers) == 1


def test_auto_is_the_default_and_says_what_it_chose(tiny_model_dir, doc, monkeypatch):
    result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # a short document on the CPU: dense, where star was measured slower (star.policy.CPU)
    assert data["attention"] == "dense" and data["attention_reason"].startswith("auto: on the CPU")
    report = invoke("ask", doc, "q?", *base(tiny_model_dir))
    assert "attention      dense:" in report.stderr and data["attention_reason"] in report.stderr
    # the same answer as dense asked for by name, whose report says it was given
    given = json.loads(invoke("ask", doc, "q?", *base(tiny_model_dir), "--json", "--attention", "dense").stdout)
    assert given["answers"][0]["answer"] == data["answers"][0]["answer"]
    assert given["attention_reason"] == "given: --attention dense"
    monkeypatch.setenv("STARCLI_ATTENTION", "star")
    star = json.loads(invoke("ask", doc, "q?", *base(tiny_model_dir), "--json").stdout)
    assert star["attention"] == "star" and star["blocks"] == 4 and star["attention_reason"] == "given: --attention star"


def test_block_options_with_auto_run_star_with_them(tiny_model_dir, doc):
    result = invoke("ask", doc, "q?", *base(tiny_model_dir), "--json", "--block-size", "64")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["attention"], data["block_size"], data["relay"]) == ("star", 64, 0)
    assert data["attention_reason"] == "auto: --block-size given: star with those blocks"
    plain = invoke("ask", doc, "q?", *base(tiny_model_dir), "--attention", "star", "--block-size", "64", "--json")
    assert json.loads(plain.stdout)["answers"][0]["answer"] == data["answers"][0]["answer"]


def test_several_questions_share_one_encoding(tiny_model_dir, doc):
    result = invoke("ask", doc, *base(tiny_model_dir), "-q", "first?", "-q", "second?", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [a["question"] for a in data["answers"]] == ["first?", "second?"]
    single = invoke("ask", doc, "second?", *base(tiny_model_dir), "--json")
    assert json.loads(single.stdout)["answers"][0]["answer"] == data["answers"][1]["answer"]


def test_count_is_a_dry_run(tiny_model_dir, tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "a.py").write_text("print('a')\n" * 50)
    (tmp_path / "repo" / "b.md").write_text("# b\n" * 30)
    result = invoke("count", tmp_path / "repo", "--model", tiny_model_dir, "--device", "cpu", "--json", "--block-size", "256")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["path"].split("/")[-1] for p in data["parts"]] == ["a.py", "b.md"]
    assert data["blocks"] == -(-data["document_tokens"] // 256)
    plain = invoke("count", tmp_path / "repo", "--model", tiny_model_dir, "--device", "cpu", "--procs", "2")
    assert "total" in plain.stdout and "2 rank(s)" in plain.stdout
    assert "auto: 2 ranks: star with N/4 blocks + relay" in plain.stdout


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["ask", "/nonexistent/file.txt", "q?"], 1, "no such file or directory"),
        (["ask", "{doc}", "   "], 2, "question is empty"),
        (["ask", "{doc}", "q?", "--block-size", "0"], 2, "--block-size must be a positive"),
        (["ask", "{doc}", "q?", "--anchor-size", "-3"], 2, "--anchor-size must be a positive"),
        (["ask", "{doc}", "q?", "--attention", "sparse"], 2, "--attention must be"),
        (["ask", "{doc}", "q?", "--temperature", "-1"], 2, "--temperature"),
        (["ask", "{doc}", "q?", "--max-new-tokens", "0"], 2, "--max-new-tokens"),
        (["ask", "{doc}", "q?", "--model", "/no/such/model"], 1, "no model"),
        (["ask", "{doc}", "q?", "--device", "tpu"], 2, "--device"),
        (["ask", "{doc}", "q?", "--procs", "0"], 2, "--procs must be at least 1"),
        (["ask", "{doc}", "q?", "--gpus", "2"], 2, "--gpus needs a CUDA device"),
        (["summarize", "{doc}", "--words", "0"], 2, "--words"),
    ],
)
def test_errors_are_one_line_without_traceback(tiny_model_dir, doc, args, code, message):
    args = [a.replace("{doc}", str(doc)) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model_dir)]
    if "--device" not in args:
        args += ["--device", "cpu"]
    result = invoke(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("starcli: error: ") and sum(l.startswith("starcli: error") for l in lines) == 1


def test_too_long_input_is_refused_then_truncated_on_request(tiny_model_dir, tmp_path):
    big = tmp_path / "big.txt"
    # the tiny model has 2048 positions and one token per byte; as a qwen2 model it stretches itself
    # with YaRN up to x4, so this is over even that
    big.write_text("x" * 12000)
    refused = invoke("ask", big, "q?", *base(tiny_model_dir))
    assert refused.exit_code == 1
    assert "too long" in refused.stderr and "8192" in refused.stderr and "--truncate" in refused.stderr
    cut = invoke("ask", big, "q?", *base(tiny_model_dir), "--truncate", "--json")
    assert cut.exit_code == 0, cut.stderr
    assert "--truncate: kept" in cut.stderr
    data = json.loads(cut.stdout)
    assert data["window"] == 8192 and data["rope_scaling"] == "yarn:4"  # stretched as far as documented, then cut
    assert 8000 < data["document_tokens"] + 8 <= 8192


def test_summarize_runs(tiny_model_dir, doc):
    result = invoke("summarize", doc, *base(tiny_model_dir), "--words", "50", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Summarize" in json.loads(result.stdout)["answers"][0]["question"]


def _cli(*args, **kwargs):
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "starcli", *map(str, args)], env=env, **kwargs)


def test_subprocess_plain_output_and_closed_pipe(tiny_model_dir, doc):
    proc = _cli("ask", doc, "q?", *base(tiny_model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert b"\x1b[" not in err  # not a terminal: no colour, no animation
    # `| head -c 1`: the reader closes early; starcli ends quietly
    shell = subprocess.run(
        f"{sys.executable} -m starcli ask {doc} q? --model {tiny_model_dir} --device cpu --max-new-tokens 200 | head -c 1",
        shell=True, capture_output=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )
    assert b"Traceback" not in shell.stderr and b"BrokenPipe" not in shell.stderr


def test_sigint_mid_generation_exits_130(tiny_model_dir, tmp_path):
    long_doc = tmp_path / "doc.txt"
    long_doc.write_text("word " * 100)
    proc = _cli("ask", long_doc, "q?", "--model", tiny_model_dir, "--device", "cpu", "--max-new-tokens", "1400",
                "--kernel", "math", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until the answer is streaming, then interrupt
    first = proc.stdout.read(1)
    assert first, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err


def test_chat_answers_each_question_and_keeps_the_conversation(tiny_model_dir, doc):
    result = invoke("chat", doc, *base(tiny_model_dir), input="first?\nfollow-up?\n/exit\n")
    assert result.exit_code == 0, result.stderr
    assert "ask away" in result.stderr
    assert result.stderr.count("tokens, first after") == 2
    # the first answer equals a one-shot ask of the same question
    single = invoke("ask", doc, "first?", *base(tiny_model_dir), "--json")
    assert result.stdout.startswith(json.loads(single.stdout)["answers"][0]["answer"])


def test_chat_ends_on_end_of_input(tiny_model_dir, doc):
    result = invoke("chat", doc, *base(tiny_model_dir), input="")
    assert result.exit_code == 0
    # it encoded the document and waited for a question; none came, so it answered nothing
    assert "encoded" in result.stderr and "ask away" in result.stderr and result.stdout == ""
