"""Answer every sample under every attention configuration, score, and aggregate.

Samples go through the same prompt path as ``starcli ask`` (the context is the document, the
question the question) and the same engine, so an accuracy gap between ``dense`` and ``star``
measures Star Attention itself and nothing else. Greedy decoding keeps runs repeatable.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from statistics import mean
from typing import Callable, Iterable

import torch

from ...ingest.prompt import build_prompt
from ...app.checks import check_star_options
from ...errors import UsageError
from ...star.partition import DEFAULT_RELAY
from ...star.sampling import SamplingParams
from .data import score
from .tasks import FAMILIES, TASKS, Sample, family_of

@dataclass(frozen=True)
class EvalConfig:
    attention: str
    block_size: int | None = None  # None: the N/4 rule of the partition planner
    anchor_size: int | None = None  # None: the block size
    relay: int | None = DEFAULT_RELAY  # tokens of the previous block attended through their cached KV; None: the default

    @property
    def label(self) -> str:
        if self.attention != "star":
            return self.attention
        block = str(self.block_size) if self.block_size else "N/4"
        anchor = str(self.anchor_size) if self.anchor_size else (block if self.block_size else "b")
        extra = f" r={self.relay}" if self.relay is not None else ""
        return f"star b={block} a={anchor}{extra}"


def make_configs(configs: Iterable) -> list[EvalConfig]:
    """``(attention, block_size|None, anchor_size|None)`` tuples (or ``EvalConfig``) checked and deduplicated."""
    out: list[EvalConfig] = []
    for item in configs:
        config = item if isinstance(item, EvalConfig) else EvalConfig(*item)
        check_star_options(config.attention, config.block_size, config.anchor_size, config.relay)
        if config.attention != "star":
            config = EvalConfig(config.attention)  # block and anchor mean nothing to the exact modes
        if config not in out:
            out.append(config)
    if not out:
        raise UsageError("no attention configuration to evaluate")
    return out


def run_eval(session, samples: list[Sample], configs: Iterable, on_sample: Callable[[dict], None] | None = None,
             decodings: dict[str, SamplingParams] | None = None) -> dict:
    """Every sample under every config and decoding on ``session`` (a ``run.session.Session`` with
    a tokenizer); returns JSON-ready ``{"configs", "samples", "tasks", "families", "averages",
    "ratios", "stops"}`` (see ``aggregate``). ``decodings``: name -> sampling (default: greedy
    alone); a sampled decoding draws sample i with seed ``seed + i``, so a run repeats. Samples that
    share a context are answered from one encoding per config. Under several ranks every rank calls
    this with the same samples; ``on_sample(record)`` is called on rank 0 only.
    """
    configs = make_configs(configs)
    decodings = decodings or {GREEDY: SamplingParams()}
    labels = [_label(config, name, decodings) for config in configs for name in decodings]
    tokenizer, comm = session.tokenizer, session.comm
    records: list[dict] = []
    by_context: dict[str, list[tuple[int, Sample]]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_context[sample.context].append((index, sample))
    for group in by_context.values():
        prompts = [build_prompt(tokenizer, sample.context, sample.question) for _, sample in group]
        doc = torch.tensor(prompts[0].document_ids, dtype=torch.long)
        for config in configs:
            partition = session.plan(doc.numel(), config.attention, config.block_size, config.anchor_size, config.relay)
            encode, _ = session.encode(doc, partition, question_ids=prompts[0].question_ids)
            for (index, sample), prompt in zip(group, prompts):
                if prompt.document_ids != prompts[0].document_ids:
                    raise UsageError(f"sample {sample.id}: its prompt splits the context differently")
                for name, params in decodings.items():
                    sampling = params if params.greedy else dataclasses.replace(params, seed=(params.seed or 0) + index)
                    start = time.perf_counter()
                    tokens, stats = session.answer(prompt.question_ids, max_new_tokens=sample.max_new_tokens,
                                                   sampling=sampling)
                    seconds = time.perf_counter() - start
                    # the whole answer at once: no half characters to hold back, no stop strings to cut
                    output = tokenizer.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")
                    record = {
                        "id": sample.id,
                        "task": sample.task,
                        "family": family_of(sample.task),
                        "length": sample.length,
                        "config": _label(config, name, decodings),
                        "attention": config.attention,
                        "decoding": name,
                        "seed": sampling.seed,
                        "block_size": partition.block_size,
                        "anchor_size": partition.anchor_size,
                        "blocks": partition.num_blocks,
                        "relay": partition.relay,  # 0 for dense and ring partitions
                        "block_starts": [b.start for b in partition.blocks],
                        "prompt_tokens": doc.numel() + len(prompt.question_ids),
                        "output": output,
                        "answers": list(sample.answers),
                        "score": score(output, sample.answers),
                        "output_tokens": len(tokens),
                        "stop_reason": stats.stop_reason,
                        "encode_seconds": encode.seconds,  # shared by the questions on this context
                        "seconds": seconds,
                    }
                    records.append(record)
                    if on_sample and comm.rank == 0:
                        on_sample(record)
    return {"configs": labels, "samples": records, **aggregate(records, labels)}


GREEDY = "greedy"


def _label(config: EvalConfig, decoding: str, decodings: dict) -> str:
    # greedy alone keeps the labels of earlier results ("dense", "star b=N/4 ...")
    return config.label if list(decodings) == [GREEDY] else f"{config.label}, {decoding}"


def _task_order(task: str) -> tuple[int, str]:
    names = list(TASKS)
    return (names.index(task), "") if task in TASKS else (len(names), task)


def aggregate(records: list[dict], labels: list[str]) -> dict:
    """Mean accuracy per task × length × config; per family the mean of its tasks' accuracies
    (so a task with more samples does not outweigh its siblings); per length and config the mean
    over families; and each non-dense config's average over dense's at the same length."""
    scores: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for r in records:
        scores[(r["task"], r["length"], r["config"])].append(r["score"])
    tasks = sorted({task for task, _, _ in scores}, key=_task_order)
    lengths = sorted({length for _, length, _ in scores})
    by_task = [
        {"task": t, "family": family_of(t), "length": n, "config": c, "accuracy": mean(scores[t, n, c]), "samples": len(scores[t, n, c])}
        for n in lengths
        for t in tasks
        for c in labels
        if (t, n, c) in scores
    ]
    grouped: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for row in by_task:
        grouped[(row["family"], row["length"], row["config"])].append(row)
    by_family = [
        {
            "family": f,
            "length": n,
            "config": c,
            "accuracy": mean(row["accuracy"] for row in rows),
            "samples": sum(row["samples"] for row in rows),
            "tasks": len(rows),
        }
        for (f, n, c), rows in grouped.items()
    ]
    averages = []
    for n in lengths:
        for c in labels:
            family_scores = [row["accuracy"] for row in by_family if row["length"] == n and row["config"] == c]
            if family_scores:
                averages.append({"length": n, "config": c, "accuracy": mean(family_scores), "families": len(family_scores)})
    base = labels[0] if labels and labels[0].startswith("dense") else "dense"
    dense = {row["length"]: row["accuracy"] for row in averages if row["config"] == base}
    ratios = [
        {
            "length": row["length"],
            "config": row["config"],
            "average": row["accuracy"],
            "dense_average": dense[row["length"]],
            "ratio": row["accuracy"] / dense[row["length"]] if dense[row["length"]] > 0 else None,
        }
        for row in averages
        if row["config"] != base and row["length"] in dense
    ]
    stops = []
    for label in labels:
        reasons = [r.get("stop_reason") for r in records if r["config"] == label]
        if reasons:
            stops.append({"config": label, "samples": len(reasons),
                          **{reason: reasons.count(reason) / len(reasons) for reason in STOP_REASONS}})
    return {"tasks": by_task, "families": by_family, "averages": averages, "ratios": ratios, "stops": stops}


# how an answer ended (``star.engine``): the last two mean it did not end by itself
STOP_REASONS = ("end of turn", "stop string", "max new tokens", "repetition")


def format_length(tokens: int) -> str:
    """2048 -> "2k", 131072 -> "128k"; lengths that are not whole multiples of 1024 stay as they are."""
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


def _render(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]


def format_table(results: dict) -> str:
    """Plain text: accuracy in % (samples) per task and per family, the per-length average over
    families, and the ratio of each config's average to dense's."""
    labels = results["configs"]

    def cells(rows: list[dict], key: str) -> list[list[str]]:
        table: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
        for row in rows:
            table[(row[key], row["length"])][row["config"]] = row
        lines = []
        for (name, length), by_config in table.items():
            line = [name, format_length(length)]
            for label in labels:
                row = by_config.get(label)
                line.append(f"{100 * row['accuracy']:.1f} ({row['samples']})" if row else "-")
            lines.append(line)
        return lines

    out = ["Accuracy in % (samples)", ""]
    out += _render(["task", "length", *labels], cells(results["tasks"], "task"))
    out.append("")
    families = sorted(results["families"], key=lambda r: (r["length"], _family_order(r["family"])))
    family_rows = cells(families, "family")
    average_rows = [
        ["average", format_length(n)]
        + [next((f"{100 * a['accuracy']:.1f}" for a in results["averages"] if a["length"] == n and a["config"] == c), "-") for c in labels]
        for n in sorted({a["length"] for a in results["averages"]})
    ]
    out += _render(["family", "length", *labels], family_rows + average_rows)
    if results["ratios"]:
        out.append("")
        ratio_rows = [
            [r["config"], format_length(r["length"]), "-" if r["ratio"] is None else f"{r['ratio']:.3f}"]
            for r in results["ratios"]
        ]
        out += _render(["vs dense (average over families)", "length", "ratio"], ratio_rows)
    if results.get("stops"):
        out.append("")
        stop_rows = [[row["config"], str(row["samples"]), *(f"{100 * row[reason]:.1f}" for reason in STOP_REASONS)]
                     for row in results["stops"]]
        out += _render(["how answers ended, % of samples", "samples", *STOP_REASONS], stop_rows)
    return "\n".join(out)


def _family_order(family: str) -> tuple[int, str]:
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), family)
