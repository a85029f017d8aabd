"""Wall time per stage of a run (the ``timings`` of ``run.json`` and ``vgtool bench``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Accumulates wall time per stage, synchronising CUDA so that GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


def best_of_turns(
    runs: dict[Hashable, Callable[[], None]], repeats: int, device: torch.device
) -> dict[Hashable, float]:
    """Seconds of each run's best repeat, the runs taking turns within each repeat.

    A slow spell of the machine then touches every run alike instead of whichever was being timed
    (CUDA is synchronised around each run). Warm the runs up before calling this.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for key, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[key] = min(best[key], time.perf_counter() - start)
    return best
