"""Spawn N processes joined on a free loopback port (gloo on the CPU, NCCL with one GPU each), run a
function on each rank."""

from __future__ import annotations

import os

import torch.multiprocessing as mp

from starcli.run.launch import free_port


def _entry(rank: int, world_size: int, port: int, fn, args, results, device):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    from starcli.star.comm import init_comm

    comm = init_comm(device, timeout_s=60)
    try:
        results[rank] = fn(comm, *args)
    finally:
        comm.close()


def run_ranks(world_size: int, fn, *args, device: str = "cpu") -> list:
    """Results of ``fn(comm, *args)`` from every rank, in rank order (fn must be importable)."""
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_entry, args=(world_size, free_port(), fn, args, results, device), nprocs=world_size, join=True)
    return [results[r] for r in range(world_size)]
