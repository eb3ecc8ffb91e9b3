"""All torch.distributed use in starcli lives here.

``init_comm`` returns a ``Comm`` for the current process: a real process group when torchrun's
variables are present, otherwise the world-size-1 case of the same class, whose collectives are
no-ops. The engine calls the same methods either way.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import RunError

# Collectives fail after this long instead of the library default (many minutes): a dead or hung
# rank then ends the whole run promptly.
DEFAULT_TIMEOUT_S = 120.0


class CommError(RunError):
    pass


@dataclass
class Comm:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    group_initialised: bool = False

    @property
    def is_last(self) -> bool:
        return self.rank == self.world_size - 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_gather_partials(self, out: torch.Tensor, lse: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every rank's (out, lse) in rank order. Shapes must match across ranks."""
        if not self.distributed:
            return [out], [lse]
        outs = [torch.empty_like(out) for _ in range(self.world_size)]
        lses = [torch.empty_like(lse) for _ in range(self.world_size)]
        dist.all_gather(outs, out.contiguous())
        dist.all_gather(lses, lse.contiguous())
        return outs, lses

    def all_gather_varlen(self, x: torch.Tensor, lengths: list[int], dim: int) -> list[torch.Tensor]:
        """Gather tensors whose size along ``dim`` differs by rank (``lengths`` known to all ranks)."""
        if not self.distributed:
            return [x]
        longest = max(lengths)
        pad = longest - x.shape[dim]
        if pad:
            shape = list(x.shape)
            shape[dim] = pad
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        pieces = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(pieces, x.contiguous())
        return [p.narrow(dim, 0, n) for p, n in zip(pieces, lengths)]

    def broadcast_(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """In place: every rank ends with ``src``'s values (``tensor`` must be contiguous)."""
        if self.distributed:
            dist.broadcast(tensor, src=src)
        return tensor

    def exchange_with_neighbours(self, send: list[torch.Tensor] | None, receive: list[torch.Tensor] | None) -> None:
        """Point to point along the rank order: ``send`` goes to the next rank, ``receive`` is filled
        in place from the previous one (None: nothing that way). Every transfer is posted before
        any is waited on, so a chain of ranks that each send and receive cannot deadlock."""
        ops = [dist.P2POp(dist.isend, t.contiguous(), self.rank + 1) for t in send or []]
        ops += [dist.P2POp(dist.irecv, t, self.rank - 1) for t in receive or []]
        if ops and self.distributed:
            for work in dist.batch_isend_irecv(ops):
                work.wait()

    def broadcast_int(self, value: int, src: int) -> int:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.broadcast(t, src=src)
        return int(t.item())

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank (e.g. every rank found its cache entry)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def gather_objects(self, obj, dst: int) -> list | None:
        """Small Python objects (per-rank statistics) to one rank; others get None."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.group_initialised and dist.is_initialized():
            dist.destroy_process_group()
            self.group_initialised = False


def init_comm(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Comm:
    """A Comm for this process; a process group only when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size <= 1:
        return Comm(0, 1, torch.device(device if device != "cuda" else "cuda:0"), False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        torch_device = torch.device("cpu")
        backend = "gloo"
    try:
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch_device if backend == "nccl" else None,
        )
    except Exception as exc:  # rendezvous failures: name the rank and cause
        raise CommError(f"rank {rank}: could not join the process group ({backend}): {exc}") from exc
    return Comm(rank, world_size, torch_device, True)
