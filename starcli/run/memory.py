"""Encoded documents kept in memory between requests (``starcli serve``), least recently used first out.

Each rank keeps its own share of a document's phase-1 KV under the same key the disk cache uses
(tokens, partition, dtype, rank), so a question about a document encoded earlier skips phase 1.
The budget is in bytes per rank; the entry just stored is never the one evicted, so one document
larger than the budget is still answered (and then dropped for the next).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class Held:
    tensors: dict[str, torch.Tensor]
    num_tokens: int
    encode_seconds: float
    bytes: int
    stored_at: float


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class DocumentMemory:
    def __init__(self, budget_bytes: int):
        if budget_bytes < 0:
            raise ValueError(f"the document memory budget must not be negative, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.entries: OrderedDict[str, Held] = OrderedDict()

    @property
    def bytes(self) -> int:
        return sum(held.bytes for held in self.entries.values())

    def get(self, key: str) -> Held | None:
        held = self.entries.get(key)
        if held is not None:
            self.entries.move_to_end(key)
        return held

    def put(self, key: str, tensors: dict[str, torch.Tensor], num_tokens: int, encode_seconds: float) -> list[str]:
        """Keep ``tensors`` under ``key``; returns the keys evicted to stay within the budget."""
        self.entries[key] = Held(tensors, num_tokens, encode_seconds, tensor_bytes(tensors), time.time())
        self.entries.move_to_end(key)
        evicted = []
        while self.bytes > self.budget_bytes and len(self.entries) > 1:
            old, _ = self.entries.popitem(last=False)
            evicted.append(old)
        return evicted

    def drop(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    def clear(self) -> None:
        self.entries.clear()
