"""Where Star Attention starts to pay on one GPU: time to first token of transformers' forward,
engine dense and star configurations (and ``auto``) at several lengths, in one process.

Each configuration is one ``starcli bench`` run (``tools.bench.command.benchmark``) on the same
random-weight shape; every run's JSON goes to OUT, and the last lines are one table of ratios to
transformers' forward (``hf-dense``) of the same length, all measured in this process.

    python3 scripts/gpu_crossover.py --shape qwen2.5-0.5b --lengths 8k,16k,32k,64k,96k,128k --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from starcli.tools.bench.cells import MODES
from starcli.tools.bench.command import benchmark

# (label, bench options): the exact baselines first, then star with N/4 blocks (the old default)
# and fixed-size blocks with relay = block (docs/accuracy.md), then auto where the bench has it.
CONFIGS = [
    ("baselines", dict(modes="hf-dense,dense,star")),
    ("exact", dict(modes="hf-dense,dense")),
    ("star 16K+relay", dict(modes="star", block_sizes="16k", relays="16k")),
    ("star 8K+relay", dict(modes="star", block_sizes="8k", relays="8k")),
    # between the two (issue 30: the 8B shape's 0.6x at 128K): smaller blocks, or a smaller anchor
    ("star 10K+relay", dict(modes="star", block_sizes="10k", relays="10k")),
    ("star 16K a4K+relay", dict(modes="star", block_sizes="16k", anchor_size="4k", relays="16k")),
    ("auto", dict(modes="auto")),
]


def label(cell: dict) -> str:
    if cell["mode"] != "star":
        return cell["mode"]
    if cell["block_rule"] == "N/4":
        return "star N/4+relay"
    anchor = f" a{cell['anchor'] // 1024}K" if cell["anchor"] < min(cell["block"], cell["length"]) else ""
    return f"star {cell['block'] // 1024}K{anchor}" + ("+relay" if cell["relay"] else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen2.5-0.5b")
    parser.add_argument("--lengths", default="8k,16k,32k,64k,96k,128k")
    parser.add_argument("--configs", default=",".join(c[0] for c in CONFIGS), help="which of CONFIGS, by label")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="gpu-out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [c for c in CONFIGS if c[0] in args.configs.split(",")
              and all(m in MODES for m in c[1]["modes"].split(","))]
    cells = []
    for name, options in wanted:
        print(f"## {name}", file=sys.stderr, flush=True)
        slug = name.split(",")[0].replace(" ", "-").replace("/", "").replace("+", "-")
        report = benchmark(shape=args.shape, lengths=args.lengths, device=args.device, question_tokens=32,
                           decode_tokens=8, decode_warmup=4, repeats=args.repeats,
                           json_path=str(out / f"crossover-{args.shape}-{slug}.json"), **options)
        cells += report["cells"]
    device = report["device"]
    labels = list(dict.fromkeys(label(c) for c in cells))
    hf = {c["length"]: c["ttft_s"] for c in cells if c["mode"] == "hf-dense" and c["status"] == "ok"}
    print(f"\n# {device} | {args.shape} bf16 | {report['git_commit'] or ''} | ttft of transformers' forward, "
          f"and each configuration's ttft / that (medians of {args.repeats})")
    print("| length | transformers s | " + " | ".join(x for x in labels if x != "hf-dense") + " |")
    print("| --- " * len(labels) + "| --- |")
    for length in sorted({c["length"] for c in cells}):
        row = [f"{hf[length]:.4f}" if length in hf else "-"]
        for name in labels:
            if name == "hf-dense":
                continue
            found = [c for c in cells if c["length"] == length and label(c) == name]
            cell = found[0] if found else None
            if cell is None or cell["status"] != "ok":
                row.append("-" if cell is None else cell["status"])
            else:
                ratio = f" ({cell['ttft_s'] / hf[length]:.3f})" if length in hf else ""
                row.append(f"{cell['ttft_s']:.4f}{ratio}")
        print(f"| {length} | " + " | ".join(row) + " |")
    (out / f"crossover-{args.shape}.json").write_text(json.dumps(cells, indent=2) + "\n")


if __name__ == "__main__":
    main()
