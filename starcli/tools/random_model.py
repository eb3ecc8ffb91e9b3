"""Save a random-weight model folder of a benchmark shape, with a byte-level tokenizer.

For speed runs of the whole CLI (`starcli ask --model DIR --gpus 2`) without real weights:
`python -m starcli.tools.random_model --shape llama3-8b --out DIR`. Speed does not depend on weight
values; the tokenizer maps every byte to one token, so a document of N bytes is N tokens.
"""

from __future__ import annotations

import argparse

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer():
    """Byte-level tokenizer with no merges and a chat template: ids < 256 are bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_random_model(shape: str, out: str, max_positions: int, device: str = "cpu") -> None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from .bench.shapes import SHAPES

    config = copy.deepcopy(SHAPES[shape])
    config.max_position_embeddings = max(max_positions, config.max_position_embeddings)
    tokenizer = byte_tokenizer()
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    config.eos_token_id = tokenizer.eos_token_id
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m starcli.tools.random_model")
    parser.add_argument("--shape", default="llama3-8b")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-positions", type=int, default=262144)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    save_random_model(args.shape, args.out, args.max_positions, args.device)
