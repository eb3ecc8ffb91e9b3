"""The speed benchmark: length parsing, FLOP counts against explicit masks, and whole runs of the
command on the tiny shape (one process in-process, two ranks through the worker loop)."""

import json

import pytest
import torch
import typer
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from starcli.cli.bench_eval import BENCH_SHAPES
from starcli.cli.bench_eval import bench as bench_command
from starcli.errors import UsageError
from starcli.model import dtypes
from starcli.star.engine import StarEngine
from starcli.star.partition import DEFAULT_PASS_TOKENS, plan_dense, plan_ring, plan_star
from starcli.tools.bench import command, runner
from starcli.tools.bench.cells import bench_settings
from starcli.tools.bench.command import benchmark
from starcli.star.dims import ModelDims
from starcli.tools.bench.flops import GIB, estimate_cell_bytes, phase1_flops, score_entries
from starcli.tools.bench.shapes import SHAPES
from starcli.tools.lengths import parse_lengths

CELL_KEYS = {"mode", "length", "block", "anchor", "relay", "ranks", "status", "ttft_s", "phase1_s", "phase1_tok_s",
             "decode_ms_tok", "peak_mem_gib", "peak_mem_gib_per_rank", "flops", "tflops", "tflops_per_gpu",
             "pct_peak", "speedup_vs_dense", "speedup_vs_hf_dense", "speedup_vs_ring", "repeats"}
TOP_KEYS = {"device", "torch", "transformers", "date", "git_commit", "command", "matmul_peak_tflops", "options",
            "model", "world_size", "kernel", "dtype", "cells"}
# small everywhere: the tiny model decodes in milliseconds, the test only checks the plumbing
# float32 pinned: the tests' memory estimates and tolerances must not depend on the machine's CPU
FAST = dict(shape="tiny", device="cpu", dtype="float32", question_tokens=8, decode_tokens=2, decode_warmup=1, matmul_size=256)


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_on_cpu_follows_the_bf16_detection(monkeypatch, native, expected):
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: native)
    settings = bench_settings("tiny", None, "128", "dense", None, None, 1, "cpu", "auto", "auto",
                               8, 2, 1, 1, 1024, None, 0)
    assert settings.dtype == expected


@pytest.fixture
def one_thread():
    """Tiny ops on a busy machine: several threads mostly wait on each other, one thread does not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- parsing --------------------------------------------------------------------------------------
def test_parse_lengths():
    assert parse_lengths("32k,128k,512k,1m,1000") == [32768, 131072, 524288, 1048576, 1000]
    assert parse_lengths(" 2K , 1.5k ") == [2048, 1536]


@pytest.mark.parametrize("bad", ["", "12q", "0", "-5", "1.5", "k", "4k,,8k"])
def test_parse_lengths_rejects(bad):
    with pytest.raises(UsageError):
        parse_lengths(bad)


# --- FLOPs ----------------------------------------------------------------------------------------
def brute_force_entries(partition, rank):
    """Count True entries of explicit boolean masks built from the method's definition."""
    plan = partition.ranks[rank]
    total = 0
    if partition.attention == "star":
        a = partition.anchor_size
        for block in plan.blocks:
            q = torch.arange(block.start, block.end).unsqueeze(1)
            k = torch.arange(partition.num_tokens).unsqueeze(0)
            local = (k >= block.start) & (k <= q)
            anchor = (k < a) if block.index > 0 else torch.zeros_like(local)
            relay = (k >= block.start - block.relay) & (k < block.start)
            total += int((local | anchor | relay).sum())
        return total
    for block in plan.blocks:  # exact causal: each query sees every key at or before it
        q = torch.arange(block.start, block.end).unsqueeze(1)
        k = torch.arange(partition.num_tokens).unsqueeze(0)
        total += int((k <= q).sum())
    return total


@pytest.mark.parametrize("n,world,block,anchor", [(300, 1, 64, 32), (300, 2, 64, None), (257, 3, 64, 16),
                                                  (100, 3, 64, 64), (50, 1, 128, None), (1000, 2, None, None)])
def test_star_entries_match_masks(n, world, block, anchor):
    partition = plan_star(n, world, block, anchor)
    for rank in range(world):
        assert score_entries(partition, rank) == brute_force_entries(partition, rank)


@pytest.mark.parametrize("n,block,anchor,relay", [(300, 64, 32, 64), (300, 64, None, 64), (257, 64, 16, 40), (300, 64, 16, 100)])
def test_star_entries_with_relay_match_masks(n, block, anchor, relay):
    partition = plan_star(n, 1, block, anchor, relay=relay)
    assert score_entries(partition, 0) == brute_force_entries(partition, 0) > score_entries(plan_star(n, 1, block, anchor), 0)


def test_relay_ratio_at_a_quarter_blocks():
    """N/4 blocks, anchor = block: the default relay (the whole previous block) raises star's score
    entries from 5/16 to 7/16 of N²."""
    n = 16384
    dense = n * n / 2
    assert score_entries(plan_star(n, relay=0), 0) / dense == pytest.approx(0.625, abs=1e-3)
    assert score_entries(plan_star(n), 0) / dense == pytest.approx(0.875, abs=1e-3)


@pytest.mark.parametrize("n,world", [(1, 1), (300, 1), (301, 2), (257, 3)])
def test_dense_and_ring_entries_match_masks(n, world):
    ring = plan_ring(n, world)
    per_rank = [score_entries(ring, r) for r in range(world)]
    assert per_rank == [brute_force_entries(ring, r) for r in range(world)]
    assert sum(per_rank) == score_entries(plan_dense(n), 0) == n * (n + 1) // 2
    assert score_entries(plan_dense(n, 64), 0) == n * (n + 1) // 2  # chunking changes nothing


def test_phase1_flops_formula():
    dims = ModelDims.from_config(SHAPES["llama3-8b"])
    assert dims.head_dim == 128 and dims.kv_heads == 8
    n = 131072
    dense = phase1_flops(dims, plan_dense(n))[0]
    # the 8B figure: 2·P·N with P ≈ 6.98e9 plus 4·L·Hq·d·N(N+1)/2 ≈ 6.3e15 at 128K
    assert dense == 2 * dims.linear_params * n + 4 * 32 * 32 * 128 * n * (n + 1) // 2
    assert 6.2e15 < dense < 6.4e15
    star = plan_star(n, 2, 32768)
    flops = phase1_flops(dims, star)
    # rank 1 receives the anchor instead of encoding it: its only extra work is block 2's anchor scores
    assert flops[1] - flops[0] == dims.attention_flops(32768 * 32768)


@pytest.mark.parametrize("name", list(SHAPES))
def test_linear_params_match_the_model(name):
    # meta tensors: the real module tree of the shape without allocating its weights
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(SHAPES[name])
    counted = sum(p.numel() for p in model.model.layers.parameters() if p.ndim == 2)
    assert ModelDims.from_config(SHAPES[name]).linear_params == counted
    if name == "llama3-8b":
        assert round(counted / 1e9, 2) == 6.98


# --- whole runs -----------------------------------------------------------------------------------
def check_cell_schema(cell):
    if cell["status"] == "ok":
        assert CELL_KEYS <= set(cell), CELL_KEYS - set(cell)
        assert cell["ttft_s"] >= cell["phase1_s"] > 0
        assert cell["flops"] == sum(cell["flops_per_rank"]) > 0
        assert cell["tflops"] > 0 and cell["pct_peak"] > 0 and cell["peak_mem_gib"] > 0
        if cell["mode"] != "hf-dense":
            assert cell["decode_ms_tok"] > 0 and cell["decode_tok_s"] == pytest.approx(1e3 / cell["decode_ms_tok"])


def test_decode_modes_and_the_static_cache_peer(tmp_path, one_thread):
    """Every engine cell once per --decodes entry, and transformers' static-cache generate as a row."""
    report = benchmark(lengths="256", modes="star,hf-static", decodes="eager,static", block_sizes="64", **FAST)
    cells = report["cells"]
    assert [(c["mode"], c["decode"]) for c in cells] == [("star", "eager"), ("star", "static"), ("hf-static", None)]
    for cell in cells:
        assert cell["status"] == "ok", cell
        check_cell_schema(cell)
    assert cells[2]["ttft_s"] > 0 and cells[2]["capture_s"] is None


def test_single_process_run(tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    report = benchmark(lengths="256,512", modes="dense,star,ring,hf-dense", block_sizes="64,256",
                                 anchor_size="32", json_path=out, **FAST)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report))
    assert TOP_KEYS <= set(written)
    assert written["world_size"] == 1 and written["matmul_peak_tflops"] > 0 and written["matmul"]["size"] == 256
    cells = written["cells"]
    assert [(c["mode"], c["length"], c["block"]) for c in cells] == [
        (m, n, b) for n in (256, 512) for m, b in (("dense", None), ("star", 64), ("star", 256), ("ring", None), ("hf-dense", None))
    ]
    for cell in cells:
        assert cell["status"] == "ok", cell
        check_cell_schema(cell)
    star = cells[1]
    assert star["anchor"] == 32 and star["passes_per_rank"] == [1] and star["kv_tokens_per_rank"] == [256]
    assert star["flops"] < cells[0]["flops"]  # block-sparse phase 1 needs fewer FLOPs than dense
    assert cells[0]["speedup_vs_dense"] == pytest.approx(1.0) and cells[3]["speedup_vs_ring"] == pytest.approx(1.0)
    assert cells[4]["speedup_vs_hf_dense"] == pytest.approx(1.0) and cells[4]["decode_ms_tok"] is None
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:7] == ["mode", "length", "block", "anchor", "relay", "decode", "ranks"]
    assert "x_ring" in table[1] and len(table) == 2 + len(cells)


def test_out_of_memory_cell_is_recorded(monkeypatch, capsys, one_thread):
    original = StarEngine.encode_context

    def encode(self, doc_ids, partition, on_progress=None, question_ids=None):
        if partition.num_tokens == 384:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return original(self, doc_ids, partition, on_progress, question_ids)

    monkeypatch.setattr(StarEngine, "encode_context", encode)
    report = benchmark(lengths="128,384", modes="star", **FAST)
    ok, oom = report["cells"]
    assert ok["status"] == "ok" and oom["status"] == "OOM"
    assert oom["estimated_need_gib"] > 0 and "out of memory" in oom["note"]
    assert "OOM (needs ~" in capsys.readouterr().out


def test_model_folder(tmp_path, one_thread):
    model = AutoModelForCausalLM.from_config(SHAPES["tiny"])
    model.save_pretrained(tmp_path / "tiny")
    options = {**FAST, "shape": None}
    report = benchmark(model=tmp_path / "tiny", lengths="128", modes="star,hf-dense", **options)
    assert report["model"]["path"] == str((tmp_path / "tiny").resolve()) and report["model"]["shape"] is None
    assert [c["status"] for c in report["cells"]] == ["ok", "ok"]


@pytest.mark.parametrize("args,words", [
    (["--lengths", "12q"], "12q"),
    (["--modes", "star,sparse"], "sparse"),
    (["--shape", "gpt9"], "gpt9"),
    (["--ranks", "0"], "--ranks"),
    (["--block-sizes", "128", "--anchor-size", "256"], "anchor"),
    (["--device", "tpu"], "--device"),
    (["--dtype", "int8"], "--dtype"),
    (["--kernel", "cudnn", "--device", "cpu"], "CUDA"),
    (["--relays", "1x"], "--relays"),
    (["--decodes", "graph", "--device", "cpu"], "--decodes"),
    (["--decodes", "fast"], "--decodes"),
])
def test_bad_options_exit_2_with_one_line(args, words):
    app = typer.Typer()
    app.command()(bench_command)
    result = CliRunner().invoke(app, ["--shape", "tiny", *args] if "--shape" not in args else args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_two_ranks_through_the_worker_loop(tmp_path, monkeypatch, capfd):
    # the ranks are real torch.distributed.run processes in the worker loop a server's ranks run
    # (``starcli.run.worker --serve``); this process sends them the cells and prints the table
    out = tmp_path / "two.json"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(command, "RELAUNCH_TIMEOUT_S", 300)
    result = benchmark(ranks=2, lengths="256,512", modes="dense,star,ring", block_sizes="128", json_path=out,
                                 relays="0,64", **FAST)
    report = json.loads(out.read_text())
    assert result == report  # rank 0's report comes back to the launching process, which writes it
    assert report["world_size"] == 2 and len(report["matmul_peak_tflops_per_rank"]) == 2
    by_mode = {}
    for cell in report["cells"]:
        by_mode.setdefault(cell["mode"], []).append(cell)
        check_cell_schema(cell)
    assert [c["status"] for c in by_mode["dense"]] == ["skipped", "skipped"]
    for cell in by_mode["star"] + by_mode["ring"]:
        assert cell["status"] == "ok" and cell["ranks"] == 2 and len(cell["peak_mem_gib_per_rank"]) == 2
    # 256 tokens in blocks of 128: rank 1 holds block 1 and receives the anchor from rank 0
    star256 = by_mode["star"][0]
    assert star256["kv_tokens_per_rank"] == [128, 128] and star256["anchor_tokens_per_rank"] == [0, 128]
    assert star256["speedup_vs_ring"] is not None and star256["speedup_vs_dense"] is None
    # the relays reach the ranks; at 512 rank 1's first block relays rank 0's last
    assert [(c["length"], c["relay"]) for c in by_mode["star"]] == [(256, 0), (256, 64), (512, 0), (512, 64)]
    # the table is printed once: one header line, one column line, one row per cell
    rows = [line for line in capfd.readouterr().out.splitlines() if line.startswith(("star ", "ring ", "dense "))]
    assert len(rows) == 8


def test_cell_that_cannot_fit_is_not_run(monkeypatch, capsys, one_thread):
    calls = []
    original = StarEngine.encode_context

    def encode(self, doc_ids, partition, on_progress=None, question_ids=None):
        calls.append(partition.num_tokens)
        return original(self, doc_ids, partition, on_progress, question_ids)

    monkeypatch.setattr(StarEngine, "encode_context", encode)
    # a capacity between what the 128-token and the 4096-token dense cells would need
    dims = ModelDims.from_config(SHAPES["tiny"])
    weights = benchmark(lengths="128", modes="dense", **FAST)["model"]["weight_gib"] * GIB

    def need(n):
        return estimate_cell_bytes(dims, plan_dense(n), 0, dtype_bytes=4, weight_bytes=int(weights),
                                         pass_tokens=DEFAULT_PASS_TOKENS, tail_tokens=16)

    def capacity(device, ranks_here=1):
        return (need(128) + need(4096)) // 2

    monkeypatch.setattr(runner, "_total_bytes", capacity)
    calls.clear()
    report = benchmark(lengths="128,4096", modes="dense", **FAST)
    fits, too_large = report["cells"]
    assert fits["status"] == "ok" and too_large["status"] == "too large"
    assert too_large["estimated_need_gib"] * GIB > capacity(None)
    assert 4096 not in calls  # never encoded
    assert "not run: does not fit: needs ~" in capsys.readouterr().out


def test_the_help_names_every_shape():
    assert BENCH_SHAPES == tuple(SHAPES)


def test_a_random_model_folder_loads_through_the_session(tmp_path):
    from starcli.run.session import Session
    from starcli.run.settings import RunSettings
    from starcli.star.comm import Comm
    from starcli.tools.random_model import save_random_model

    save_random_model("tiny", str(tmp_path / "tiny"), max_positions=4096)
    session = Session.load(RunSettings(dtype="float32"), str(tmp_path / "tiny"), Comm())
    encode, _ = session.encode([5] * 100, session.plan(100))
    tokens, _ = session.answer([6, 7], max_new_tokens=3)
    assert encode.tokens == 100 and len(tokens) <= 3 and session.tokenizer is not None


def test_a_cell_too_slow_for_the_machine_is_not_run(monkeypatch, capsys, one_thread):
    """bench --lengths 1m on a small CPU: the cell's estimated time is over the limit, so it is
    reported, not run for hours."""
    from starcli.tools.bench import runner

    monkeypatch.setattr(runner, "MAX_CELL_SECONDS", 1e-6)
    report = benchmark(lengths="256", modes="dense", **FAST)
    cell = report["cells"][0]
    assert cell["status"] == "skipped" and "too slow here: about" in cell["note"]
    assert "too slow here" in capsys.readouterr().out
    assert report["attention_tflops_per_rank"][0] > 0


def test_the_estimate_charges_attention_at_its_own_rate():
    """A million tokens through the tiny shape: matmuls are a rounding error, the causal attention
    is 2.6e14 FLOP. At a matmul peak alone that looked like minutes; at a CPU attention rate a
    hundred times lower it is hours, and the cell is refused."""
    from starcli.tools.bench.cells import CellSpec

    dims = ModelDims.from_config(SHAPES["tiny"])
    million = 1 << 20
    spec = CellSpec(mode="dense", length=million, partition=plan_dense(million, DEFAULT_PASS_TOKENS))
    fast_attention = runner.cell_seconds(spec, dims, 32, matmul_rate=1e12, attention_rate=1e12)
    slow_attention = runner.cell_seconds(spec, dims, 32, matmul_rate=1e12, attention_rate=1e10)
    assert fast_attention < runner.MAX_CELL_SECONDS < slow_attention
    assert slow_attention == pytest.approx(dims.attention_flops(million * (million + 1) // 2) / 1e10, rel=0.01)
