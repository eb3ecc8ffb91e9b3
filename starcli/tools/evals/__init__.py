"""The accuracy suite behind ``starcli eval``: synthetic long-context tasks, a JSONL reader, and a
runner that compares attention modes on the same prompts."""

from .data import EvalDataError, read_jsonl, score, write_jsonl
from .runner import EvalConfig, format_table, run_eval
from .tasks import FAMILIES, TASKS, Sample, TaskError, family_of, generate, generate_suite

__all__ = [
    "FAMILIES",
    "TASKS",
    "EvalConfig",
    "EvalDataError",
    "Sample",
    "TaskError",
    "family_of",
    "format_table",
    "generate",
    "generate_suite",
    "read_jsonl",
    "run_eval",
    "score",
    "write_jsonl",
]
