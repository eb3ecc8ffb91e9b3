"""Inputs longer than the window: sectioning at natural boundaries (pure), the map/combine strategy
over a fake model (pure), the CLI on the tiny random model with a small forced --window, and one
end-to-end summary with the real default model on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from starcli.cli.main import app
from starcli.app.longdoc import LongInputError, Pass, _Partial, answer_long, complete_sentences, render_partials, summarize_long
from starcli.model.rope import RopeScaling, RopeScalingError, apply_rope_scaling, parse_rope_scaling, unsupported_reason
from starcli.app.sectioning import (
    FILE, HEADING, LINE, PAGE, PARAGRAPH, Boundary, pack, plan_sections, section_texts, text_boundaries, token_boundaries,
)

runner = CliRunner()


def chapters(count: int, paragraphs: int, words: int = 8) -> str:
    out = []
    for c in range(1, count + 1):
        body = "\n\n".join(" ".join(f"c{c}p{p}w{w}" for w in range(words)) + "." for p in range(1, paragraphs + 1))
        out.append(f"# Chapter {c}\n\n{body}\n")
    return "\n".join(out)


def char_tokens(text: str) -> list[int]:
    """One token per character: token i starts at character i."""
    return list(range(len(text)))


def cut(text: str, budget: int) -> list[str]:
    starts = char_tokens(text)
    return section_texts(text, starts, plan_sections(len(starts), token_boundaries(text_boundaries(text), starts), budget))


# --- sectioning ---------------------------------------------------------------------------------------

def test_boundary_levels():
    text = ("=== a.txt ===\nintro\n\n# Title\nline one\nline two\n\nnext paragraph\n"
            "--- page 2 ---\nChapter 7\nSecond Title\n============\n\fpage three\n=== b.txt ===\nend\n")
    levels = {text[b.offset:].split("\n", 1)[0]: b.level for b in text_boundaries(text)}
    assert levels["# Title"] == HEADING
    assert levels["line one"] == LINE
    assert levels["next paragraph"] == PARAGRAPH
    assert levels["--- page 2 ---"] == PAGE
    assert levels["Chapter 7"] == HEADING
    assert levels["Second Title"] == HEADING
    assert levels["\fpage three"] == PAGE
    assert levels["=== b.txt ==="] == FILE
    assert all(b.offset > 0 for b in text_boundaries(text))  # the start of the text is no cut


def test_a_sentence_starting_with_chapter_is_not_a_heading():
    text = "intro\nChapter 3 of the manual explains, at some length, everything that the reader will need to know about it.\n"
    assert [b.level for b in text_boundaries(text)] == [LINE]


def test_token_boundaries_move_inside_a_token_to_the_next_and_keep_the_strongest():
    # tokens start at 0, 4, 9; a boundary at 6 (inside token 1) belongs to token 2
    assert token_boundaries([Boundary(6, LINE), Boundary(9, HEADING), Boundary(4, PARAGRAPH)], [0, 4, 9]) == [(1, PARAGRAPH), (2, HEADING)]


def test_whole_chapters_make_the_sections_when_they_fit():
    text = chapters(5, 3)
    sections = cut(text, 260)
    assert "".join(sections) == text
    assert all(s.startswith("# Chapter") for s in sections)
    assert all(len(s) <= 260 for s in sections)


def test_a_chapter_over_the_budget_is_cut_at_paragraphs_and_never_mixed_with_the_next():
    text = chapters(2, 12)
    sections = cut(text, 200)
    assert "".join(sections) == text and all(len(s) <= 200 for s in sections)
    for s in sections:
        assert s.startswith("# Chapter") or s.startswith("c")  # a chapter's start or a paragraph's
        assert s.count("# Chapter") <= 1 and not re.search(r"\n# Chapter", s)  # no section crosses into the next chapter


def test_sections_are_balanced_rather_than_full_then_a_scrap():
    text = "\n\n".join(f"paragraph {i:03d} " + "x" * 40 for i in range(30))  # 30 equal paragraphs
    sizes = [len(s) for s in cut(text, 600)]
    assert max(sizes) <= 600 and min(sizes) > 0.6 * max(sizes)


def test_a_line_longer_than_a_section_is_cut_at_token_level_and_nothing_is_dropped():
    text = "short line\n" + "y" * 1000 + "\nlast line\n"
    sections = cut(text, 300)
    assert "".join(sections) == text and all(len(s) <= 300 for s in sections)


def test_a_token_cut_inside_a_multibyte_character_keeps_every_character_once():
    from starcli.app.passes import token_starts
    from starcli.tools.random_model import byte_tokenizer

    text = "é" * 300 + "\n"  # two byte tokens per character
    starts = token_starts(byte_tokenizer(), text)
    assert len(starts) == 601 and starts == sorted(starts)
    sections = plan_sections(len(starts), token_boundaries(text_boundaries(text), starts), 101)  # odd: cuts fall mid-character
    assert "".join(section_texts(text, starts, sections)) == text


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 3000),
    budget=st.integers(1, 500),
    cuts=st.lists(st.tuples(st.integers(-5, 3005), st.integers(LINE, FILE)), max_size=60),
)
def test_sections_tile_the_tokens_within_the_budget(n, budget, cuts):
    sections = plan_sections(n, cuts, budget)
    assert sections[0][0] == 0 and sections[-1][1] == n
    assert all(a < b for a, b in sections)
    assert all(b == c for (_, b), (c, _) in zip(sections, sections[1:]))  # every token exactly once
    assert all(b - a <= budget for a, b in sections)


def test_pack_closes_runs_at_the_target_and_budget():
    assert pack([3, 3, 3, 3], 7) == [(0, 2), (2, 4)]
    assert pack([3, 3, 3, 3], 12, target=5) == [(0, 2), (2, 4)]
    assert pack([10, 1], 5) == [(0, 1), (1, 2)]  # an item over the budget stands alone


# --- the strategy over a fake model ---------------------------------------------------------------------

class FakePasses:
    """One token per character; every pass is checked against the window and logged; answers are
    short, deterministic and name what they read."""

    def __init__(self, window: int, answer_tokens: int = 20):
        self.window = window
        self.answer_tokens = answer_tokens
        self.log: list[Pass] = []

    def token_starts(self, text):
        return char_tokens(text)

    def prompt_tokens(self, document, question):
        return len(document) + len(question) + 10

    def run(self, passes):
        answers = []
        for p in passes:
            for q in p.questions:
                assert self.prompt_tokens(p.document, q) + self.answer_tokens <= self.window, p.label
            self.log.append(p)
            answers.append([f"[{p.label}]"[: self.answer_tokens] for _ in p.questions])
        return answers


def test_summary_visits_every_section_once_in_order_and_combines_in_order():
    text = chapters(6, 4)
    passes = FakePasses(window=800)
    run = summarize_long(text, 100, passes)
    sections = [p for p in passes.log if p.kind == "section"]
    assert [p.document for p in sections] == [s.text for s in run.sections]
    assert "".join(s.text for s in run.sections) == text  # nothing dropped, nothing read twice
    assert [p.label for p in sections] == [f"section {i}/{len(sections)}" for i in range(1, len(sections) + 1)]
    assert all(f"part {i} of {len(sections)}" in p.questions[0] for i, p in enumerate(sections, 1))
    final = passes.log[-1]
    assert final.kind == "final" and "about 100 words" in final.questions[0]
    headers = re.findall(r"=== part (\d+) of", final.document)
    assert headers == [str(i) for i in range(1, len(sections) + 1)]
    assert run.passes == {"section": len(sections), "final": 1} and run.combine_levels == 0
    assert run.partials[0] == [f"[section {i}/{len(sections)}]"[:20] for i in range(1, len(sections) + 1)]


def test_partials_that_do_not_fit_one_pass_are_combined_over_levels_in_order():
    text = chapters(30, 2)
    passes = FakePasses(window=700, answer_tokens=40)
    run = summarize_long(text, None, passes)
    assert run.combine_levels >= 1 and run.passes["combine"] >= 2
    groups = [p for p in passes.log if p.kind == "combine" and "(level 1)" in p.label]
    covered = [tuple(map(int, re.search(r"parts (\d+)-(\d+)", p.label).groups())) for p in groups]
    assert covered[0][0] == 1 and covered[-1][1] == len(run.sections)
    assert all(b + 1 == c for (_, b), (c, _) in zip(covered, covered[1:]))  # consecutive, in document order


def test_map_asks_every_section_every_question_then_combines_each_question():
    text = chapters(4, 4)
    passes = FakePasses(window=600)
    run = answer_long(text, ["where is c2p3?", "what is c4p1?"], passes)
    sections = [p for p in passes.log if p.kind == "section"]
    assert all(len(p.questions) == 2 and "Answer from this part only" in p.questions[0] for p in sections)
    finals = [p for p in passes.log if p.kind == "final"]
    assert [f.heading for f in finals] == ["where is c2p3?", "what is c4p1?"]
    assert all("Question: " in f.questions[0] for f in finals)
    assert len(run.partials) == 2 and all(len(p) == len(sections) for p in run.partials)


def test_a_window_too_small_for_the_prompt_is_an_option_error():
    with pytest.raises(LongInputError) as info:
        summarize_long(chapters(3, 3), None, FakePasses(window=120))
    assert info.value.code == 2 and "--window" in str(info.value)


def test_a_partial_cut_by_the_token_limit_loses_its_unfinished_sentence():
    cut_off = "The with statement wraps a block. It calls __exit__ on the way out. The suite is equivalent to:\n\n   with"
    assert complete_sentences(cut_off) == "The with statement wraps a block. It calls __exit__ on the way out."
    assert complete_sentences("Finished. \"Quoted.\"") == "Finished. \"Quoted.\""
    assert complete_sentences("One. Then a long unfinished tail that is most of the answer and goes on") .endswith("goes on")


def test_partial_headers_are_file_boundaries():
    doc = render_partials([_Partial(1, 1, "one"), _Partial(2, 3, "two")], 3)
    assert [b.level for b in text_boundaries(doc) if doc[b.offset:].startswith("===")] == [FILE]


# --- rope scaling ------------------------------------------------------------------------------------------

def test_rope_scaling_parse_and_apply():
    from transformers import GPT2Config, Qwen2Config

    assert parse_rope_scaling("yarn:4") == RopeScaling("yarn", 4.0)
    for bad in ("yarn", "dynamic:2", "yarn:1", "linear:x", "yarn:nan"):
        with pytest.raises(RopeScalingError):
            parse_rope_scaling(bad)
    config = Qwen2Config(max_position_embeddings=2048)
    apply_rope_scaling(config, RopeScaling("yarn", 4.0))
    assert config.max_position_embeddings == 8192
    assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["original_max_position_embeddings"] == 2048
    assert "already uses" in unsupported_reason(config)
    assert "no rotary" in unsupported_reason(GPT2Config())


# --- the CLI on the tiny model -----------------------------------------------------------------------------

@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.md"
    path.write_text(chapters(3, 6))  # about 1.3K byte tokens: three chapters
    return path


def tiny(model, *extra):
    return ["--model", str(model), "--device", "cpu", "--max-new-tokens", "12", *extra]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_summarize_over_the_window_reads_sections_then_combines(tiny_model_dir, book):
    result = invoke("summarize", book, *tiny(tiny_model_dir, "--window", "700", "--json"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    long = data["long"]
    assert long["strategy"] == "summary" and long["window"] == 700
    assert long["sections"] >= 2
    assert len(long["section_summaries"]) == len(long["section_tokens"]) == long["sections"]
    spans = long["section_tokens"]
    assert spans[0][0] == 0 and spans[-1][1] == long["input_tokens"]
    assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))  # every token in exactly one section
    kinds = [p["kind"] for p in long["pass_log"]]
    assert kinds == ["section"] * long["sections"] + ["combine"] * kinds.count("combine") + ["final"]
    assert long["passes"] == len(kinds)
    assert [p["label"] for p in long["pass_log"][: long["sections"]]] == [f"section {i}/{long['sections']}" for i in range(1, long["sections"] + 1)]
    for p in long["pass_log"]:  # no pass exceeds the window
        assert p["document_tokens"] + p["question_tokens"] + 12 <= 700
    assert data["answers"][0]["answer"] and data["document_tokens"] == long["input_tokens"]
    assert "section 1/" in result.stderr and "the window of 700" in result.stderr
    # greedy is deterministic: the same run gives the same sections, summaries and answer
    again = json.loads(invoke("summarize", book, *tiny(tiny_model_dir, "--window", "700", "--json")).stdout)
    assert again["long"]["section_summaries"] == long["section_summaries"]
    assert again["answers"][0]["answer"] == data["answers"][0]["answer"]


def test_summarize_that_fits_is_one_pass(tiny_model_dir, book):
    result = invoke("summarize", book, *tiny(tiny_model_dir, "--json"))
    assert result.exit_code == 0, result.stderr
    assert "long" not in json.loads(result.stdout)


def test_ask_over_the_window_is_refused_with_both_sizes_and_the_choices(tiny_model_dir, book):
    result = invoke("ask", book, "where is c2p3w1?", *tiny(tiny_model_dir, "--window", "700"))
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "too long" in error and "> 700" in error and "--long map" in error and "--truncate" in error


def test_ask_long_map_streams_each_answer_and_reports_the_strategy(tiny_model_dir, book):
    result = invoke("ask", book, "-q", "where is c2p3w1?", "-q", "what follows c3p1w7?",
                    *tiny(tiny_model_dir, "--window", "700", "--long", "map"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("## where is c2p3w1?\n") and "\n## what follows c3p1w7?\n" in result.stdout
    assert "long input" in result.stderr and "--long map" in result.stderr
    # the window is tiny: with the answer instruction in every prompt, partial answers may need a combine level
    assert re.search(r"passes +\d+ \(\d+ sections, (\d+ combines?, )?2 finals\); partial answers combined in order",
                     result.stderr), result.stderr


def test_long_input_over_two_ranks_gives_the_single_process_result(tiny_model_dir, book):
    args = tiny(tiny_model_dir, "--window", "700", "--json")
    one = json.loads(invoke("summarize", book, *args).stdout)
    two = invoke("summarize", book, *args, "--procs", "2")
    assert two.exit_code == 0, two.stderr
    two = json.loads(two.stdout)
    assert two["ranks"] == 2
    assert two["long"]["section_summaries"] == one["long"]["section_summaries"]
    assert two["answers"][0]["answer"] == one["answers"][0]["answer"]


def test_rope_scaling_widens_the_window(tiny_model_dir, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 600)  # 3000 byte tokens: over the tiny model's 2048 positions
    assert invoke("ask", big, "q?", *tiny(tiny_model_dir, "--rope-scaling", "none")).exit_code == 1
    result = invoke("ask", big, "q?", *tiny(tiny_model_dir, "--rope-scaling", "yarn:2", "--json"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["window"] == 4096 and data["rope_scaling"] == "yarn:2"


# --- the real default model ------------------------------------------------------------------------------

STORY = {
    "The Lighthouse": "The keeper tends the lighthouse on Gull Rock. Every evening the keeper climbs the stairs, trims the wick and "
                      "writes the weather in a log book. Ships pass far out, and the island is quiet.",
    "The Storm": "In November a storm breaks the lamp's glass. The keeper works through the night in the wind to patch it, "
                 "because a fishing fleet is due back before dawn and the rocks are close to the channel.",
    "The Rescue": "At dawn one boat of the fleet runs aground. The keeper rows out with a rope and brings the three fishermen "
                  "to the island, where they wait by the stove until the sea calms and the harbour sends a boat.",
}


@pytest.mark.real_model
def test_real_model_summarizes_a_text_longer_than_the_window(tmp_path, real_model_cache):
    # each chapter is its story told several times with small changes: about 330 tokens a chapter
    text = ""
    for number, (title, story) in enumerate(STORY.items(), 1):
        days = " ".join(f"On day {d}, the account goes on. {story}" for d in range(1, 6))
        text += f"# Chapter {number}: {title}\n\n{days}\n\n"
    (tmp_path / "story.md").write_text(text)
    env = {**os.environ, "STARCLI_CACHE": real_model_cache, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "starcli", "summarize", str(tmp_path / "story.md"), "--device", "cpu",
         "--window", "700", "--max-new-tokens", "40", "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    long = data["long"]
    assert long["sections"] >= 2 and long["input_tokens"] > 700
    assert len(long["section_summaries"]) == long["sections"]
    assert all(s.strip() for s in long["section_summaries"])
    assert long["passes"] == long["sections"] + long["pass_counts"].get("combine", 0) + 1
    assert data["answers"][0]["answer"].strip()


def test_input_over_the_window_stretches_the_rope_where_the_model_allows(tiny_model_dir, tmp_path, monkeypatch):
    """A model of a family that documents YaRN (the tiny model is a qwen2, limit 4) stretches by the
    smallest factor that fits; --rope-scaling none refuses as before; a family with no known limit refuses."""
    from starcli.app import window

    big = tmp_path / "big.txt"
    big.write_text("word " * 600)  # 3000 byte tokens + question + 12 answer tokens: over 2048 positions
    with monkeypatch.context() as unknown_family:
        unknown_family.setattr(window, "YARN_FAMILIES", {})
        assert invoke("ask", big, "q?", *tiny(tiny_model_dir)).exit_code == 1  # no known limit: refused
    result = invoke("ask", big, "q?", *tiny(tiny_model_dir, "--json"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    factor = float(data["rope_scaling"].removeprefix("yarn:"))
    needed = data["document_tokens"] + data["answers"][0]["question_tokens"] + 12
    # the smallest quarter step that fits
    assert data["window"] == int(2048 * factor) >= needed > int(2048 * (factor - 0.25)) and data["rope_scaling_automatic"]
    assert f"stretched with YaRN x{factor:g}" in result.stderr and "--rope-scaling none" in result.stderr
    refused = invoke("ask", big, "q?", *tiny(tiny_model_dir, "--rope-scaling", "none"))
    assert refused.exit_code == 1 and "too long" in refused.stderr
    small = invoke("ask", tmp_path / "big.txt", "q?", *tiny(tiny_model_dir, "--json", "--rope-scaling", "yarn:2"))
    assert json.loads(small.stdout)["rope_scaling_automatic"] is False
