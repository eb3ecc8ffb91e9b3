"""GGUF to an ordinary safetensors folder, dequantized to bfloat16, with the model's decoding
defaults in its generation config and the int8 copies CPU decoding reads.

Reading a GGUF through transformers costs about two minutes on a CPU every time, while the
converted folder loads in seconds; ``starcli.model.resolve`` keeps the converted folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import one_line
from .load import quiet_transformers
from .spec import ModelError

STAGE_CONVERT = "converting model"  # (steps done, steps total)
_CONVERT_STEPS = 4



def convert_gguf(
    src_dir: Path, gguf_name: str, out_dir: Path, progress: Callable[[str, int, int], None] | None, *, label: str | None = None
) -> None:
    """Read ``src_dir/gguf_name`` with transformers and save it to ``out_dir`` as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from . import decode_weights
    from .generation import gguf_defaults, write_defaults

    def step(done: int) -> None:
        if progress:
            progress(STAGE_CONVERT, done, _CONVERT_STEPS)

    step(0)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_name, local_files_only=True)
            step(1)
            model = AutoModelForCausalLM.from_pretrained(
                str(src_dir),
                gguf_file=gguf_name,
                dtype=torch.bfloat16,
                # Unpack every block into a dense model: the blocks themselves cannot be saved,
                # and dense bf16 weights are what loads fast afterwards.
                quantization_config=GgufConfig(dequantize=True),
                local_files_only=True,
            )
            step(2)
            _drop_quantization(model)
            model.save_pretrained(str(out_dir))
            write_defaults(out_dir, model.config.model_type, gguf_defaults(Path(src_dir) / gguf_name))
            # made once here rather than at every load (CPU decoding reads them; 0.5 GB for the default)
            decode_weights.save_copies(model, out_dir)
            step(3)
            tokenizer.save_pretrained(str(out_dir))
            step(4)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot convert {label or gguf_name}: {one_line(exc)}") from exc


def _drop_quantization(model: Any) -> None:
    # A model loaded through the GGUF quantizer refuses to serialize while it still carries the
    # quantizer and its config; once dequantized it is an ordinary dense model, so both go.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        del model.hf_quantizer
    if getattr(model, "is_quantized", False):
        model.is_quantized = False

