"""Run output writing off the main loop, with a bounded queue so memory stays flat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundWriter:
    """A small thread pool; :meth:`submit` blocks when ``max_pending`` tasks are already queued.

    The first exception raised by a task is re-raised by the next :meth:`submit` or by :meth:`close`.
    """

    def __init__(self, num_threads: int = 1, max_pending: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="vgtool-writer")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._error: BaseException | None = None
        self.busy_seconds = 0.0
        self._lock = threading.Lock()

    def _done(self, future: Future) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is not None and self._error is None:
            self._error = future.exception()

    def submit(self, fn: Callable[..., object], *args, **kwargs) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        self._pool.submit(self._timed, fn, *args, **kwargs).add_done_callback(self._done)

    def _timed(self, fn, *args, **kwargs):
        import time

        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self.busy_seconds += time.perf_counter() - start

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)
