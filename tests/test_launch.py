"""Multi-process runs through the real launcher (torchrun, gloo on CPU), driven as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .distributed import free_port


def run_cli(*args, timeout=240):
    # float32 like every tiny-model test (conftest pins it in-process): in bfloat16 the ranks' merged
    # partials round differently from one process's attention, and greedy tokens may differ
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "STARCLI_DTYPE": "float32"}
    return subprocess.run([sys.executable, "-m", "starcli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("The launch code is 4711. " * 30)
    return path


def answer(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["answers"][0]["answer"]


def common(model):
    return ["--model", model, "--device", "cpu", "--max-new-tokens", "6", "--json", "--block-size", "128"]


@pytest.mark.parametrize("attention", ["star", "ring"])
def test_procs_give_the_single_process_answer(tiny_model_dir, doc, attention):
    expected = answer(run_cli("ask", doc, "code?", *common(tiny_model_dir), "--attention", "star" if attention == "star" else "dense"))
    for procs in (2, 3):
        result = run_cli("ask", doc, "code?", *common(tiny_model_dir), "--attention", attention, "--procs", procs)
        assert answer(result) == expected
        data = json.loads(result.stdout)
        assert data["ranks"] == procs and len(data["per_rank"]) == procs
        assert sum(r["kv_tokens"] for r in data["per_rank"]) == data["document_tokens"]


def test_two_nodes_on_localhost(tiny_model_dir, doc):
    expected = answer(run_cli("ask", doc, "code?", *common(tiny_model_dir)))
    endpoint = f"127.0.0.1:{free_port()}"
    # float32 like every tiny-model test (conftest pins it in-process): in bfloat16 the ranks' merged
    # partials round differently from one process's attention, and greedy tokens may differ
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "STARCLI_DTYPE": "float32"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "starcli", "ask", str(doc), "code?", *map(str, common(tiny_model_dir)),
             "--procs", "1", "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", endpoint],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [o[1] for o in outputs]
    assert json.loads(outputs[0][0])["answers"][0]["answer"] == expected
    assert json.loads(outputs[0][0])["ranks"] == 2
    assert "node 0 prints the answer" in outputs[1][1]


def test_a_node_that_never_comes_ends_the_run_in_bounded_time(tiny_model_dir, doc):
    """Node 0 of two, alone: the run fails with one line once --timeout and the start allowance
    have passed, and leaves no process behind."""
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "starcli", "ask", str(doc), "code?", *map(str, common(tiny_model_dir)), "--procs", "1",
         "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", endpoint, "--timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started = time.monotonic()
    tree = []
    while not tree and proc.poll() is None and time.monotonic() - started < 60:
        time.sleep(0.5)
        tree = _descendants(proc.pid)  # torchrun, waiting for the other node
    assert tree
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "not every node joined the rendezvous" in err and "Traceback" not in err, err
    assert time.monotonic() - started < 90
    assert _still_running(tree) == []


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children + [d for c in children for d in _descendants(c)]


def _still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are still alive (zombies awaiting their parent do not count)."""
    time.sleep(1)
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    return int(env[b"RANK"]) if b"starcli.run.worker" in cmdline and b"RANK" in env else None


def _long_two_rank_ask(tiny_model_dir, tmp_path, *extra, env: dict | None = None) -> subprocess.Popen:
    """A two-rank ask that generates for a while: something to kill or interrupt."""
    doc = tmp_path / "doc.txt"
    doc.write_text("word " * 100)
    # float32 like every tiny-model test (conftest pins it in-process): in bfloat16 the ranks' merged
    # partials round differently from one process's attention, and greedy tokens may differ
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "STARCLI_DTYPE": "float32", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "starcli", "ask", str(doc), "q?", "--model", str(tiny_model_dir), "--device", "cpu",
         "--procs", "2", "--max-new-tokens", "1400", "--kernel", "math", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def test_a_killed_rank_ends_the_run_with_a_message_and_no_orphans(tiny_model_dir, tmp_path):
    proc = _long_two_rank_ask(tiny_model_dir, tmp_path, "--timeout", "20")
    assert proc.stdout.read(1), proc.stderr.read()  # generation has started
    ranks = {_rank_of(p): p for p in _descendants(proc.pid)}
    assert 1 in ranks, ranks
    tree = _descendants(proc.pid)
    os.kill(ranks[1], signal.SIGKILL)  # a process this test's command started
    started = time.monotonic()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert time.monotonic() - started < 60
    assert b"rank 1" in err and b"Traceback" not in err
    assert _still_running(tree) == []


@pytest.mark.parametrize("sig, code, words", [
    (signal.SIGINT, 130, b"interrupted"), (signal.SIGTERM, 143, b"stopped by SIGTERM"),
    (signal.SIGHUP, 129, b"stopped by SIGHUP"),
])
def test_a_signal_stops_every_rank_and_leaves_no_job_files(tiny_model_dir, tmp_path, sig, code, words):
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = _long_two_rank_ask(tiny_model_dir, tmp_path, env={"TMPDIR": str(temp)})
    assert proc.stdout.read(1), proc.stderr.read()
    tree = _descendants(proc.pid)
    assert len([p for p in tree if _rank_of(p) is not None]) == 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and words in err and b"Traceback" not in err, err
    assert _still_running(tree) == []
    assert list(temp.iterdir()) == []  # the document's token ids did not outlive the run


def test_the_rank_killed_first_is_named_not_the_ranks_torchrun_ended_after_it():
    from types import SimpleNamespace

    from starcli.run.launch import _describe_failure

    # torchrun lists the ranks it ended with SIGTERM alongside the one that died first
    log = ("[0]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : -15 (pid: 11)\n"
           "[1]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 12)\n")
    message = _describe_failure(SimpleNamespace(errors=[]), log, 1)
    assert message == "rank 1 was killed by SIGKILL (out of memory, or killed)"
    only_term = log.replace("-9 (pid: 12)", "-15 (pid: 12)")
    assert _describe_failure(SimpleNamespace(errors=[]), only_term, 1) == "rank 0 was killed by SIGTERM"
