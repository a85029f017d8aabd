"""Peak resident memory of this process and of its child processes (for ``vgtool bench``).

``RUSAGE_CHILDREN``'s ``ru_maxrss`` cannot stand for the DataLoader workers' memory: after a
``vgtool ground`` run it equalled the main process's peak (608 MiB) while the workers, sampled,
held 384-399 MiB. So the children's resident memory is sampled from ``/proc`` while they run.
"""

from __future__ import annotations

import resource
import threading
from pathlib import Path


def _status_mib(status: Path, field: str) -> float | None:
    """A ``kB`` field of a ``/proc/<pid>/status`` file, in MiB; None if unreadable (or exited)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def own_peak_mib() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` where ``/proc`` is missing)."""
    peak = _status_mib(Path("/proc/self/status"), "VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_rss_mib() -> float | None:
    """The largest direct child's resident memory now (MiB; 0 without children, None without /proc)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    largest = 0.0
    for children in tasks.glob("*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        for pid in pids:
            largest = max(largest, _status_mib(Path(f"/proc/{pid}/status"), "VmRSS:") or 0.0)
    return largest


class ChildPeakSampler:
    """Samples the largest child process's resident memory every ``interval`` seconds in a thread.

    Use as a context manager around the work that starts the children; :attr:`peak_mib` is the
    largest sample (a spike shorter than the interval can be missed), or None without ``/proc``.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-rss", daemon=True)

    def _run(self) -> None:
        while True:
            sample = _children_rss_mib()
            if sample is not None:
                self.peak_mib = max(self.peak_mib or 0.0, sample)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> ChildPeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
