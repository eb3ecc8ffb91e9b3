"""Loading a resolved model folder: the one place a model and its tokenizer are built.

``load_model`` reads a checkpoint folder (never from the network; shipped code only with
``trust_remote_code``, pickles only with ``allow_pickle``); ``random_model`` builds random weights
of a config's shape for speed runs (``starcli bench``). Both return models in eval mode.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import one_line
from .dtypes import pick_dtype
from .folder import TOKENIZER_FILES, check_model_dir, read_config
from .spec import ModelError, ModelSpec

def _needs_remote_code(path: Path, config: dict[str, Any]) -> bool:
    """Whether loading ``path`` would need Python code shipped inside the checkpoint."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    # A config may name custom classes (auto_map) and still be a type transformers knows; then
    # transformers uses its own implementation and nothing from the folder runs, so only an
    # unknown type truly requires the shipped code.
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING_NAMES:
        return True
    try:
        tok_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if isinstance(tok_config, dict) and tok_config.get("auto_map"):
        import transformers

        tokenizer_class = tok_config.get("tokenizer_class") or ""
        return not hasattr(transformers, tokenizer_class) and not hasattr(
            transformers, tokenizer_class.removesuffix("Fast")
        )
    return False


def check_remote_code(spec: ModelSpec, trust_remote_code: bool) -> None:
    """Refuse, before anything is loaded, a model folder whose own code would have to run."""
    path = Path(spec.path)
    if not trust_remote_code and _needs_remote_code(path, read_config(path)):
        raise ModelError(f"{spec.name} ships its own code; pass --trust-remote-code to run it")


def check_family(spec: ModelSpec, trust_remote_code: bool = False) -> None:
    """Refuse, before any weight is read, a model whose config and class show the engine cannot run
    it (``star.probe.config_refusal``): one line naming the family and what it lacks."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from ..star.probe import config_refusal

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(spec.path), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - an unreadable config is the user's model problem
        raise ModelError(f"cannot read the config of {spec.name}: {one_line(exc)}") from exc
    auto_class = (getattr(config, "auto_map", None) or {}).get("AutoModelForCausalLM")
    if auto_class and trust_remote_code:
        return  # the model's own code decides; the engine's run-time probe still checks it
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        raise ModelError(f"{spec.name}: model type {config.model_type!r} is not a causal language model transformers knows")
    reason = config_refusal(config, model_class) or _probe_without_weights(config)
    if reason:
        raise ModelError(f"{spec.name}: {reason}")


def _probe_without_weights(config) -> str | None:
    """What the model does with its attention (``star.probe``), run on the meta device: shapes and
    calls without a single weight read. A model that reads a value on the host cannot run there;
    the engine probes it again once loaded."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from ..star import attention
    from ..star.probe import probe_attention

    attention.register()
    try:
        with torch.device("meta"), quiet_transformers():
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=attention.ATTENTION_NAME,
                                                     dtype=torch.bfloat16)
        return probe_attention(model)[1]
    except Exception:  # noqa: BLE001 - whatever meta tensors cannot run is decided after loading
        return None


def load_model(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    dtype: Any = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    rope_scaling: str | None = None,
    tokenizer: Any = None,
    with_tokenizer: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a resolved spec, in eval mode, on ``device``.

    ``dtype`` None means `pick_dtype(device, "auto")`. Nothing is fetched from the network;
    code shipped inside a checkpoint runs only with ``trust_remote_code``; pickle weights are
    read only with ``allow_pickle`` (and then with ``weights_only``). ``rope_scaling``
    (``"yarn:4"``) stretches the rotary embedding (see ``starcli.model.rope``); ``tokenizer``, one
    already loaded from the same folder, is returned instead of loading it again; without
    ``with_tokenizer`` the folder needs none and None is returned in its place.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(spec.path)
    if not path.is_dir():
        raise ModelError(f"{spec.name}: {path} is missing; resolve the model again")
    check_model_dir(path, allow_pickle=allow_pickle)
    config = read_config(path)
    if not trust_remote_code and _needs_remote_code(path, config):
        raise ModelError(f"{spec.name} ships its own code; pass --trust-remote-code to run it")

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: {one_line(exc)}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} is not available (torch sees no CUDA GPU)")
    if dtype is None:
        dtype = pick_dtype(device, "auto")

    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "dtype": dtype,
    }
    # Refusing pickle outright unless asked; with allow_pickle transformers still prefers
    # safetensors when both exist and reads pickles with torch's weights_only loader.
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    else:
        kwargs["weights_only"] = True  # transformers' default today; pinned so it stays so
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if target.type != "cpu":
        # Loading straight onto the accelerator avoids a second full copy in host memory.
        kwargs["device_map"] = {"": str(target)}
    if rope_scaling:
        kwargs["config"] = _rope_scaled_config(path, rope_scaling, trust_remote_code)
    if attn_implementation == "star":
        check_family(spec, trust_remote_code)

    # Without any vocabulary file transformers quietly builds an empty tokenizer that turns
    # every document into unknown tokens; fail here instead, with the reason.
    if with_tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise ModelError(f"{spec.name} has no tokenizer (no tokenizer.json or vocabulary file in {path})")
    if tokenizer is None and with_tokenizer:
        tokenizer = load_tokenizer(path, trust_remote_code)
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load {spec.name}: {one_line(exc)}") from exc
    model.eval()
    if target.type == "cpu":
        model.to(target)
    return model, tokenizer


def _rope_scaled_config(path: Path, rope_scaling: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    from .rope import RopeScalingError, apply_rope_scaling, parse_rope_scaling

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
        apply_rope_scaling(config, parse_rope_scaling(rope_scaling))
    except RopeScalingError as exc:
        raise ModelError(str(exc)) from None
    return config


def load_tokenizer(path, trust_remote_code: bool = False):
    """The tokenizer of a resolved model folder alone (the CLI's prompt building needs no weights)."""
    from transformers import AutoTokenizer

    from .folder import TOKENIZER_FILES

    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from the config alone: every text, no tokens
        raise ModelError(f"{Path(path).name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a user-facing model problem
        raise ModelError(f"cannot load the tokenizer of {Path(path).name}: {one_line(exc)}") from exc
    if not tokenizer("a", add_special_tokens=False)["input_ids"]:
        raise ModelError(f"the tokenizer of {Path(path).name} turns text into no tokens")
    return tokenizer


def random_model(config, *, device, dtype, seed: int = 0):
    """A causal LM of ``config``'s shape with random weights, built on ``device`` directly (an 8B
    model never passes through host memory), with the star attention function."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..star import attention

    attention.register()
    torch.manual_seed(seed)  # identical weights on every rank and every run
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention.ATTENTION_NAME)
    return model.eval()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    # The caller reports progress through its own callback; transformers' tqdm bars on stderr
    # would interleave with it.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader draws its bar with tqdm directly, past that switch; point it at
    # transformers' own switch-aware tqdm for the duration. Conversions are serialized by the
    # cache lock, so swapping the module attribute cannot race with another conversion.
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_reader
    except ImportError:
        gguf_reader = None
    saved_tqdm = getattr(gguf_reader, "tqdm", None)
    if saved_tqdm is not None:
        gguf_reader.tqdm = hf_logging.tqdm
    try:
        yield
    finally:
        if saved_tqdm is not None:
            gguf_reader.tqdm = saved_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()
