"""Decoding workers must not outlive a main process that was killed outright (SIGKILL, the
out-of-memory killer): it cannot stop them, and they would wait for it forever, holding memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

# A loader whose workers are busy decoding when the main process is killed; it prints their pids.
# Like a run's, its items carry decoded images as arrays, which go through the workers' result pipe:
# once the main process stops reading, a worker's queue thread blocks on the full pipe, and at exit
# the worker waits for that thread (torch's watchdog notices the dead parent, but cannot end it).
MAIN = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    import torch
    from vgtool.data.image_dataset import worker_init

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 10_000

        def __getitem__(self, index):
            time.sleep(0.02)
            return np.zeros((320, 320, 3), dtype=np.uint8)

    init = worker_init if sys.argv[1] == "worker_init" else None
    loader = torch.utils.data.DataLoader(
        Slow(), batch_size=4, num_workers=2, worker_init_fn=init, collate_fn=list  # arrays stay arrays
    )
    batches = iter(loader)
    next(batches)
    print(" ".join(str(worker.pid) for worker in batches._workers), flush=True)
    time.sleep(0.5)  # the workers fill their queues
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _alive(pid: int) -> bool:
    """Running or asleep; an exited process (gone, or a zombie waiting to be reaped) is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _workers_left_after_kill(init: str, wait_s: float, tmp_path: Path) -> list[int]:
    """Run :data:`MAIN`; the pids of its workers still alive ``wait_s`` after it was killed (then
    killed here). Its output goes to files: workers left alive would hold a pipe open."""
    out, err = tmp_path / f"{init}.out", tmp_path / f"{init}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        main = subprocess.Popen(
            [sys.executable, "-c", MAIN, init],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        returncode = main.wait(timeout=120)
    assert returncode == -signal.SIGKILL, err.read_text()[-2000:]
    pids = [int(pid) for pid in out.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def test_workers_die_with_a_killed_main_process(tmp_path: Path):
    assert _workers_left_after_kill("worker_init", wait_s=3.0, tmp_path=tmp_path) == []


def test_without_it_they_outlive_it(tmp_path: Path):
    """The check above can fail: without :func:`worker_init` the workers are still there after
    twice as long (torch's watchdog notices the parent is gone, but the worker then waits for its
    blocked queue thread)."""
    assert len(_workers_left_after_kill("none", wait_s=6.0, tmp_path=tmp_path)) == 2
