"""Model resolution, the embedded default model, and the conversion cache."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from starcli.cache import dirs as cache_dir
from starcli.model import resolve as models
from starcli.model import convert, dtypes, embedded, listing, load
from starcli.errors import UsageError
from starcli.model.resolve import DEFAULT_MODEL_NAME, ModelError, ModelSpec

from .tiny import fake_default_parts, write_tiny_qwen2_gguf

# --------------------------------------------------------------------------------------------
# fixtures and builders


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """Every cache the code could touch lives under this test's tmp_path, and nothing goes online."""
    monkeypatch.setenv("STARCLI_CACHE", str(tmp_path / "starcli-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("STARCLI_MODEL", raising=False)

    def no_network(self, *args, **kwargs):
        raise AssertionError(f"model resolution tried to open a connection to {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)


def models_dir() -> Path:
    return Path(os.environ["STARCLI_CACHE"]) / "models"


def cache_entries() -> list[str]:
    """What the conversion cache holds, temporary directories included."""
    d = models_dir()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


WORDS = ["the", "a", "of", "and", "to", "in", "is", "what", "capital", "france", "paris", "?", "."]


def save_tiny_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<eos>", *WORDS])}
    vocab.update({f"w{i}": len(vocab) for i in range(40)})
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(path)


def save_tiny_model(path: Path, arch: str = "qwen2", tokenizer: bool = True) -> Path:
    """A randomly initialised two-layer model saved with save_pretrained (safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=1000,
        max_position_embeddings=256,
        eos_token_id=2,
        pad_token_id=1,
    )
    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    torch.manual_seed(0)
    model = model_cls(config_cls(**shape))
    model.save_pretrained(path)
    if tokenizer:
        save_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen") / "tiny-qwen")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-qwen2.gguf")


def refuse_conversion(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("converted again although a finished conversion was cached")

    monkeypatch.setattr(convert, "convert_gguf", boom)


# --------------------------------------------------------------------------------------------
# cache_dir


def test_cache_root_precedence_and_privacy(tmp_path, monkeypatch):
    monkeypatch.delenv("STARCLI_CACHE")
    assert cache_dir.cache_root() == tmp_path / "xdg" / "starcli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir.cache_root() == tmp_path / "home" / ".cache" / "starcli"

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    monkeypatch.setenv("STARCLI_CACHE", str(shared))
    root = cache_dir.cache_root()
    assert root == shared
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_atomic_dir_success_and_failure(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with cache_dir.atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []

    with cache_dir.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final
        (tmp / "data").write_text("done")
        assert not final.exists()
    assert (final / "data").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_atomic_dir_race_between_threads(tmp_path):
    """Two builders inside atomic_dir at the same moment: one result wins whole, nothing leaks."""
    final = tmp_path / "entry"
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def build(tag: str) -> None:
        try:
            with cache_dir.atomic_dir(final) as tmp:
                for i in range(50):
                    (tmp / f"f{i}").write_text(tag)
                barrier.wait(timeout=10)  # both are built, neither renamed yet
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(tag,)) for tag in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    contents = {(final / f"f{i}").read_text() for i in range(50)}
    assert contents in ({"A"}, {"B"}), "the entry mixes two builds"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_atomic_dir_race_between_processes(tmp_path):
    final = tmp_path / "entry"
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from starcli.cache.dirs import atomic_dir
        tag = sys.argv[1]
        with atomic_dir(Path({str(final)!r})) as tmp:
            for i in range(50):
                (tmp / f"f{{i}}").write_text(tag)
            (Path({str(tmp_path)!r}) / f"ready-{{tag}}").touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.01)
        print("ok", tag)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(models.__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, tag], env=env, stdout=subprocess.PIPE, text=True)
        for tag in ("A", "B")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{t}").exists() for t in "AB"):
        assert time.monotonic() < deadline, "builders did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    contents = {(final / f"f{i}").read_text() for i in range(50)}
    assert contents in ({"A"}, {"B"})
    leftovers = {p.name for p in tmp_path.iterdir()} - {"entry", "go", "ready-A", "ready-B"}
    assert not leftovers


def test_write_json_atomic(tmp_path):
    target = tmp_path / "sub" / "x.json"
    cache_dir.write_json_atomic(target, {"a": 1})
    cache_dir.write_json_atomic(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_sweep_stale_tmp_keeps_fresh_builds(tmp_path):
    old = tmp_path / f"{cache_dir.TMP_PREFIX}old"
    fresh = tmp_path / f"{cache_dir.TMP_PREFIX}fresh"
    keep = tmp_path / "entry"
    for d in (old, fresh, keep):
        d.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    os.utime(keep, (time.time() - 3 * 86400,) * 2)
    cache_dir.sweep_stale_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, "entry"])


# --------------------------------------------------------------------------------------------
# resolution order and its errors


def test_nonexistent_name_names_everything_tried(tmp_path):
    with pytest.raises(ModelError) as err:
        models.resolve_model("no-such-org/no-such-model")
    msg = str(err.value)
    assert "no model 'no-such-org/no-such-model'" in msg
    assert "not a directory" in msg and "not a .gguf file" in msg
    assert f"HF_HUB_CACHE={tmp_path / 'hf-hub'}" in msg
    assert "\n" not in msg


def test_missing_gguf_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model(str(tmp_path / "missing.gguf"))


def test_plain_file_is_not_a_model(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ModelError, match="neither a model directory nor a .gguf file"):
        models.resolve_model(str(f))


def test_directory_without_config(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(ModelError) as err:
        models.resolve_model(str(d))
    assert str(err.value) == f"{d} is not a model directory (no config.json)"


def test_directory_resolves_without_touching_the_cache(tiny_qwen):
    spec = models.resolve_model(str(tiny_qwen))
    assert spec == ModelSpec(name="tiny-qwen", kind="directory", path=tiny_qwen.resolve(), source=str(tiny_qwen))
    assert cache_entries() == []


def test_llama_directory_resolves_and_loads(tmp_path):
    d = save_tiny_model(tmp_path / "tiny-llama", arch="llama")
    model, tok = load.load_model(models.resolve_model(str(d)))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert tok("what is the capital of france ?")["input_ids"]


def test_starcli_model_env_is_honoured(tiny_qwen, monkeypatch):
    monkeypatch.setenv("STARCLI_MODEL", str(tiny_qwen))
    assert models.resolve_model(None).kind == "directory"
    # an explicit name still wins over the environment
    with pytest.raises(ModelError, match="no model 'nope/nope'"):
        models.resolve_model("nope/nope")


def _fake_hub_entry(hub: Path, repo: str, source: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_cache_lookup_is_local_only(tmp_path, tiny_qwen, monkeypatch):
    snapshot = _fake_hub_entry(tmp_path / "hf-hub", "tiny-org/tiny-qwen", tiny_qwen)
    spec = models.resolve_model("tiny-org/tiny-qwen")
    assert spec.kind == "hub-cache" and spec.name == "tiny-org/tiny-qwen"
    assert spec.path == snapshot
    # HF_HOME is honoured when HF_HUB_CACHE is not set
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home2"))
    _fake_hub_entry(tmp_path / "home2" / "hub", "tiny-org/other", tiny_qwen)
    assert models.resolve_model("tiny-org/other").kind == "hub-cache"
    with pytest.raises(ModelError, match=r"HF_HUB_CACHE=.*home2"):
        models.resolve_model("tiny-org/tiny-qwen")


# --------------------------------------------------------------------------------------------
# pickle, remote code, corrupt weights


def test_pickle_only_directory_is_refused_unless_allowed(tmp_path, tiny_qwen):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_qwen.iterdir():
        if f.suffix != ".safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    state = load_file(str(tiny_qwen / "model.safetensors"))
    torch.save(state, d / "pytorch_model.bin")

    with pytest.raises(ModelError) as err:
        models.resolve_model(str(d))
    assert str(err.value) == f"{d} has only pickle weights; pass --allow-pickle to load them with weights_only"

    spec = models.resolve_model(str(d), allow_pickle=True)
    with pytest.raises(ModelError, match="only pickle weights"):
        load.load_model(spec)
    model, _ = load.load_model(spec, allow_pickle=True)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[key], state[key])


def _custom_code_dir(path: Path, model_type: str, sentinel: Path, source: Path | None = None) -> Path:
    path.mkdir()
    if source is not None:
        for f in source.iterdir():
            (path / f.name).write_bytes(f.read_bytes())
        config = json.loads((path / "config.json").read_text())
    else:
        config = {}
        (path / "model.safetensors").write_bytes(b"")
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "custom.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    return path


def test_remote_code_is_refused_at_load_not_at_resolve(tmp_path):
    sentinel = tmp_path / "code-ran"
    d = _custom_code_dir(tmp_path / "custom", "starcli-test-custom", sentinel)
    spec = models.resolve_model(str(d))
    assert spec.kind == "directory"
    with pytest.raises(ModelError) as err:
        load.load_model(spec)
    assert str(err.value) == "custom ships its own code; pass --trust-remote-code to run it"
    assert not sentinel.exists()


def test_auto_map_on_a_known_type_loads_builtin_code(tmp_path, tiny_qwen):
    sentinel = tmp_path / "code-ran"
    d = _custom_code_dir(tmp_path / "custom-qwen", "qwen2", sentinel, source=tiny_qwen)
    model, _ = load.load_model(models.resolve_model(str(d)))
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert not sentinel.exists()


def test_corrupt_safetensors_is_a_model_error(tmp_path, tiny_qwen):
    d = tmp_path / "corrupt"
    d.mkdir()
    for f in tiny_qwen.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    spec = models.resolve_model(str(d))
    with pytest.raises(ModelError, match=r"^cannot load corrupt: ") as err:
        load.load_model(spec)
    assert "\n" not in str(err.value)


def test_directory_without_tokenizer_resolves_but_does_not_load(tmp_path):
    d = save_tiny_model(tmp_path / "no-tokenizer", tokenizer=False)
    spec = models.resolve_model(str(d))
    assert spec.kind == "directory"
    with pytest.raises(ModelError, match="no-tokenizer has no tokenizer"):
        load.load_model(spec)


def test_load_tiny_model_and_generate(tiny_qwen):
    model, tok = load.load_model(models.resolve_model(str(tiny_qwen)))
    assert model.dtype == torch.float32 and not model.training
    assert next(model.parameters()).device.type == "cpu"
    ids = tok("what is the capital of france ?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    model16, _ = load.load_model(models.resolve_model(str(tiny_qwen)), dtype=torch.bfloat16, attn_implementation="eager")
    assert model16.dtype == torch.bfloat16


def test_unavailable_device_is_a_model_error(tiny_qwen):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="not available"):
        load.load_model(models.resolve_model(str(tiny_qwen)), device="cuda")


# the detection itself, before the autouse fixture pins it (tests/conftest.py)
CPU_HAS_FAST_BF16 = dtypes.cpu_has_fast_bf16


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_follows_the_bf16_detection(monkeypatch, native, expected):
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: native)
    assert dtypes.pick_dtype("cpu", None) == expected
    assert dtypes.pick_dtype("cpu", "auto") == expected
    assert dtypes.pick_dtype("cpu", "float32") == torch.float32
    assert ("natively" in dtypes.auto_dtype_reason("cpu")) == native


@pytest.mark.parametrize(
    "capabilities, native",
    [
        ({"avx512_f": True, "avx512_bf16": True}, True),
        ({"amx_tile": True, "amx_bf16": True}, True),
        ({"avx512_f": True, "avx512_bw": True, "avx512_bf16": False}, False),  # AVX-512 alone emulates bf16
        ({"avx2": True}, False),
        ({"neon": True, "bf16": True}, False),  # ARM: not measured yet
    ],
)
def test_cpu_bf16_detection_reads_torch_capabilities(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert CPU_HAS_FAST_BF16() is native


def test_pick_dtype(monkeypatch):
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: False)
    assert dtypes.pick_dtype("cpu", "bfloat16") == torch.bfloat16
    assert dtypes.pick_dtype("cpu", "float16") == torch.float16
    assert dtypes.pick_dtype("cuda", "float32") == torch.float32
    if not torch.cuda.is_available():
        assert dtypes.pick_dtype("cuda", "auto") == torch.bfloat16
    with pytest.raises(UsageError, match="unknown dtype"):
        dtypes.pick_dtype("cpu", "int3")


# --------------------------------------------------------------------------------------------
# GGUF conversion and the cache


def test_corrupt_gguf_leaves_nothing_in_the_cache(tmp_path):
    bad_magic = tmp_path / "bad.gguf"
    bad_magic.write_bytes(b"NOPE" + os.urandom(4096))
    with pytest.raises(ModelError, match="not a GGUF file"):
        models.resolve_model(str(bad_magic))
    assert cache_entries() == []

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(ModelError, match=r"^cannot convert truncated.gguf: ") as err:
        models.resolve_model(str(truncated))
    assert "\n" not in str(err.value)
    assert cache_entries() == []


def test_gguf_converts_once_and_is_reused(tiny_gguf, monkeypatch):
    events: list[tuple[str, int, int]] = []
    spec = models.resolve_model(str(tiny_gguf), progress=lambda *e: events.append(e))
    assert spec.kind == "gguf" and spec.name == "tiny-qwen2"
    assert spec.path.parent == models_dir() and spec.path.name == f"gguf-{spec.sha256[:16]}"
    marker = json.loads((spec.path / "starcli.json").read_text())
    assert marker["sha256"] == spec.sha256 and marker["source_bytes"] == tiny_gguf.stat().st_size
    assert marker["transformers"] and marker["size_bytes"] > 0
    assert any(f.suffix == ".safetensors" for f in spec.path.iterdir())
    assert not (spec.path / "model.gguf").exists()
    convert_steps = [e[1:] for e in events if e[0] == convert.STAGE_CONVERT]
    assert convert_steps == [(i, 4) for i in range(5)]
    assert events[0][0] == models.STAGE_HASH and events[0][2] == tiny_gguf.stat().st_size
    assert cache_entries() == [spec.path.name]

    refuse_conversion(monkeypatch)
    again = models.resolve_model(str(tiny_gguf))
    assert again == spec

    model, tok = load.load_model(spec)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32
    prompt = tok.apply_chat_template([{"role": "user", "content": "the thing"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")

    listed = {row["name"]: row for row in listing.list_models()}
    assert listed["tiny-qwen2"]["converted"] and listed["tiny-qwen2"]["sha256"] == spec.sha256
    assert listed["tiny-qwen2"]["size_bytes"] >= marker["size_bytes"]  # plus the marker itself


def test_incomplete_entry_is_rebuilt(tiny_gguf):
    spec = models.resolve_model(str(tiny_gguf))
    (spec.path / "starcli.json").unlink()
    assert {r["kind"] for r in listing.list_models()} == {"default", "embedded", "incomplete"}
    (spec.path / "stray").write_text("left over from an interrupted build")
    rebuilt = models.resolve_model(str(tiny_gguf))
    assert (rebuilt.path / "starcli.json").is_file() and not (rebuilt.path / "stray").exists()
    assert cache_entries() == [spec.path.name]


def test_concurrent_first_resolves_convert_once(tiny_gguf, monkeypatch):
    calls = []
    real = convert.convert_gguf

    def counting(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # keep the first conversion running while the second asks
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "convert_gguf", counting)
    results: list[ModelSpec] = []
    errors: list[BaseException] = []

    def go():
        try:
            results.append(models.resolve_model(str(tiny_gguf)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert len(calls) == 1
    assert cache_entries() == [results[0].path.name]


# --------------------------------------------------------------------------------------------
# the embedded default model (with stand-in part packages)


def test_missing_default_package_says_how_to_install(monkeypatch):
    missing_one = (*embedded.DEFAULT.packages[:5], "starcli_no_such_part_package")
    monkeypatch.setattr(embedded, "DEFAULT", dataclasses.replace(embedded.DEFAULT, packages=missing_one))
    with pytest.raises(ModelError) as err:
        models.resolve_model(None)
    msg = str(err.value)
    assert "starcli-no-such-part-package" in msg
    assert "pip install 'starcli[default-model]'" in msg
    assert cache_entries() == []
    row = listing.list_models()[0]
    assert row["installed"] is False and row["status"] == "not installed"


def test_default_hash_mismatch_is_refused(tmp_path, tiny_gguf, monkeypatch):
    fake_default_parts(tmp_path / "parts", tiny_gguf.read_bytes(), monkeypatch, sha256="0" * 64)
    refuse_conversion(monkeypatch)
    with pytest.raises(ModelError, match="failed their integrity check"):
        models.resolve_model("default")
    assert cache_entries() == []


def test_default_size_mismatch_is_refused(tmp_path, tiny_gguf, monkeypatch):
    fake_default_parts(tmp_path / "parts", tiny_gguf.read_bytes(), monkeypatch)
    monkeypatch.setattr(embedded, "DEFAULT", dataclasses.replace(embedded.DEFAULT, gguf_bytes=tiny_gguf.stat().st_size + 1))
    refuse_conversion(monkeypatch)
    with pytest.raises(ModelError, match="damaged"):
        models.resolve_model(None)
    assert cache_entries() == []


def test_default_assembles_converts_once_and_reuses(tmp_path, tiny_gguf, monkeypatch):
    blob = tiny_gguf.read_bytes()
    fake_default_parts(tmp_path / "parts", blob, monkeypatch)
    events: list[tuple[str, int, int]] = []
    spec = models.resolve_model(None, progress=lambda *e: events.append(e))
    assert spec.kind == "default" and spec.name == DEFAULT_MODEL_NAME
    assert spec.path == models_dir() / DEFAULT_MODEL_NAME
    assembled = [e for e in events if e[0] == embedded.STAGE_ASSEMBLE]
    assert assembled[0] == (embedded.STAGE_ASSEMBLE, 0, len(blob))
    assert assembled[-1] == (embedded.STAGE_ASSEMBLE, len(blob), len(blob))
    assert [e[1] for e in events if e[0] == convert.STAGE_CONVERT] == [0, 1, 2, 3, 4]
    assert not (spec.path / ".source").exists()
    assert cache_entries() == [DEFAULT_MODEL_NAME]

    refuse_conversion(monkeypatch)
    for name in ("default", DEFAULT_MODEL_NAME, None):
        t0 = time.perf_counter()
        assert models.resolve_model(name) == spec
        assert time.perf_counter() - t0 < 1.0
    # once converted, the packages are no longer needed
    monkeypatch.setattr(embedded, "DEFAULT", dataclasses.replace(embedded.DEFAULT, packages=("starcli_no_such_part_package",) * 6))
    assert models.resolve_model(None) == spec

    default_row = listing.list_models()[0]
    assert default_row["kind"] == "default" and default_row["converted"] is True
    assert default_row["status"] == "converted"
    assert default_row["size_bytes"] > 0


# --------------------------------------------------------------------------------------------
# the real default model


@pytest.fixture(scope="session")
def real_default_model(tmp_path_factory):
    """The real default model, converted once per session (or reused from STARCLI_TEST_CACHE)."""
    try:
        models.default_part_paths()
    except ModelError as exc:
        pytest.skip(str(exc))
    cache = os.environ.get("STARCLI_TEST_CACHE") or str(tmp_path_factory.mktemp("real-model-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARCLI_CACHE", cache)
        t0 = time.perf_counter()
        spec = models.resolve_model(None)
        print(f"\nresolve default model: {time.perf_counter() - t0:.1f}s into {cache}")
    return spec


@pytest.mark.real_model
def test_real_default_model_answers(real_default_model, monkeypatch):
    monkeypatch.setenv("STARCLI_CACHE", str(real_default_model.path.parents[1]))
    t0 = time.perf_counter()
    model, tok = load.load_model(real_default_model)
    print(f"load converted default model: {time.perf_counter() - t0:.1f}s")
    assert model.dtype == dtypes.pick_dtype("cpu", "auto")  # bfloat16 on CPUs with native bf16
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(f"answer: {answer!r}")
    assert answer
    row = listing.list_models()[0]
    assert row["converted"] and row["installed"]
