"""How a run stops early: SIGTERM unwinds it as Ctrl-C does, and a full disk or a lost write
permission ends it with one line that says what was kept and what to do.

Either way the run keeps what it finished: the journal lines already appended are flushed, the
crops and overlays already queued are written (or, if the disk is full, left for the resumed run to
re-write), and a line cut short by the full disk is dropped when the journal is opened again. The
same command then resumes where the run stopped, to the same ``annotations.json``.
"""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vgtool.errors import OutputWriteError, Terminated

# errno -> (what went wrong, what to do before re-running)
WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on device", "free space"),
    getattr(errno, "EDQUOT", errno.ENOSPC): ("disk quota exceeded", "free space"),
    errno.EACCES: ("permission denied", "make the output folder writable again"),
    errno.EPERM: ("operation not permitted", "make the output folder writable again"),
    errno.EROFS: ("read-only file system", "make the output folder writable again"),
}


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`~vgtool.errors.Terminated` (a
    ``KeyboardInterrupt``) in the main thread; the handler that was there before is put back after.

    Python lets only the main thread install handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:  # None: a handler not installed from Python, which cannot be put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def write_failure(err: OSError, out_dir: Path) -> OutputWriteError | None:
    """The one-line error for a write that failed for lack of space or permission, or None for any
    other error. It names the file (``out_dir`` when the error does not say)."""
    if err.errno not in WRITE_FAILURES:
        return None
    what, remedy = WRITE_FAILURES[err.errno]
    return OutputWriteError(
        f"{err.filename or out_dir}: {what}; finished images are kept in the journal; "
        f"{remedy} and re-run the same command"
    )


@contextmanager
def write_failures_stop_the_run(out_dir: Path) -> Iterator[None]:
    """Turn a failed write of the block (see :func:`write_failure`) into its one-line error."""
    try:
        yield
    except OSError as err:
        failure = write_failure(err, out_dir)
        if failure is None:
            raise
        raise failure from err
