"""Sharded grounding under ``torchrun``: which images a rank grounds, where it journals, how ranks meet.

``torchrun --nproc-per-node N [--nnodes M ...] -m vgtool ground ...`` starts one process per rank
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment). Image ``i`` of the sorted list (0-based)
belongs to rank ``i % world_size``, whatever earlier runs did: ownership never depends on which
images are already done, so the ranks need no agreement beyond the list itself. Each rank appends
to its own journal, ``journal.rank<r>-of-<w>.jsonl``; every run reads all journals of the folder, so
a resume under any world size (or one process) finds everything done before.

The ranks meet twice through the process group (gloo on CPU, NCCL with one device per rank,
``cuda:LOCAL_RANK``): after rank 0 has prepared the output folder, and after all have grounded
their shares, when rank 0 alone names the crops and writes ``annotations.json`` and ``run.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# a rank that finishes its share early waits at the last meeting for the slowest one
MEETING_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """This process's place in a run: rank ``rank`` of ``world_size`` (one process: 0 of 1).

    Attributes:
        local_rank: the rank's index on its node (its CUDA device).
        run_id: what the ranks of one launch share and another launch does not; keys the shared
            lock of the output folder.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_id: str | None = None

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, position: int | np.ndarray) -> bool | np.ndarray:
        """Whether the image at ``position`` (0-based, in the sorted list) is this rank's; for an
        array of positions, a bool array of the same shape."""
        return position % self.world_size == self.rank

    @property
    def journal_name(self) -> str | None:
        """This rank's journal file name; None for one process (it writes ``journal.jsonl``)."""
        return f"journal.rank{self.rank}-of-{self.world_size}.jsonl" if self.sharded else None

    def device(self, device_spec: str) -> str:
        """The device this rank grounds on: ``cuda:LOCAL_RANK`` when ranks share CUDA devices."""
        if not self.sharded or device_spec == "cpu":
            return device_spec
        import torch

        if device_spec in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return device_spec


def shard_from_env(environ: dict[str, str] | None = None) -> Shard:
    """The shard ``torchrun`` describes in the environment (one process when ``WORLD_SIZE`` <= 1)."""
    env = os.environ if environ is None else environ
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard()
    # torchrun's rendezvous id is "none" unless --rdzv-id is given; the store address and the world
    # size keep two launches apart all the same (--standalone picks a free port per launch)
    run_id = "{}@{}:{}/{}".format(
        env.get("TORCHELASTIC_RUN_ID", "none"),
        env.get("MASTER_ADDR", ""),
        env.get("MASTER_PORT", ""),
        world_size,
    )
    return Shard(
        rank=int(env["RANK"]),
        world_size=world_size,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        run_id=run_id,
    )


def join_group(shard: Shard, device: str) -> None:
    """Join the process group of a sharded run (gloo, or NCCL when the rank grounds on CUDA)."""
    if not shard.sharded:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="nccl", timeout=MEETING_TIMEOUT)
    else:
        dist.init_process_group(backend="gloo", timeout=MEETING_TIMEOUT)


def meet(shard: Shard) -> None:
    """Wait until every rank is here."""
    if shard.sharded:
        import torch.distributed as dist

        dist.barrier()


def gather(shard: Shard, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (also a meeting: every rank waits for all)."""
    if not shard.sharded:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * shard.world_size
    dist.all_gather_object(values, value)
    return values


def leave_group(shard: Shard) -> None:
    if shard.sharded:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
