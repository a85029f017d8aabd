"""One writer per output folder: an exclusive lock on ``--out`` for the length of a run.

A run holds ``flock(LOCK_EX)`` on ``--out/.vgtool.lock`` from before it writes anything until
``annotations.json`` and ``run.json`` are written, and a second run into the folder is refused at
once, naming the holder's pid and host. The kernel drops the lock when the process ends, however
it ends, so the file a killed run leaves behind never blocks the next run: it only tells who held
the folder last. That record (pid, host, start time, run id) is written and read under a brief
flock on the folder itself, the *gate*, so a refused run never reads half of one. Processes forked
while the lock is held (decoding workers) close their copy of it at once: a flock belongs to the
open file, which a fork shares, and a worker orphaned by a killed run must not keep the folder.

The ranks of one sharded run share the lock: each rank writes its own journal under one ``--out``,
so all ranks hold the folder while any other run is kept out. The ranks agree on a ``run_id`` (see
:func:`~vgtool.ground.shard.shard_from_env`) and take a *shared* flock instead, under the gate: when
a non-blocking ``LOCK_EX`` succeeds, no run holds the folder, and the rank writes the record with
its run id and turns its lock into ``LOCK_SH``; when it fails, the rank takes ``LOCK_SH`` only if the
record names its own run id, and is refused otherwise. A plain run's ``LOCK_EX`` conflicts with any
rank's ``LOCK_SH``, so the two kinds never mix, and the folder is free again when the last rank
ends.

Where there is no ``flock`` the lock is not taken and nothing stops two runs writing into one
folder: on Windows (no ``fcntl``), and on file systems without locks (a warning says so).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vgtool.errors import InputError, OutputLocked

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".vgtool.lock"
# flock errors of file systems that offer no locks (some network and FUSE file systems)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
logger = logging.getLogger(__name__)
_held_fds: set[int] = set()  # the lock files this process holds open (a fork's child: none)


class OutputLock:
    """The lock of one output folder, held from :meth:`acquire` to :meth:`release` (or the end of
    the process); a context manager.

    Attributes:
        path: the lock file, ``out_dir/.vgtool.lock``.
        run_id: recorded with the holder; the key the ranks of a sharded run share it by.
        shared: take it shared with the processes whose run id is ``run_id`` (the ranks of one
            sharded run), and exclusive to everyone else.
    """

    def __init__(self, out_dir: str | Path, run_id: str | None = None, *, shared: bool = False):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.run_id = run_id or uuid.uuid4().hex
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (False where the system offers none, and in a
        process forked from the holder)."""
        return self._fd in _held_fds

    def acquire(self) -> OutputLock:
        """Create the folder if needed and take its lock, or refuse at once.

        Raises:
            OutputLocked: another process holds the folder; the message names its pid and host.
            InputError: the folder or its lock file cannot be written.
        """
        if fcntl is None or self.held:
            return self
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with _gate(self.out_dir):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    if _try_flock(fd):
                        _write_record(fd, self._record())
                        if self.shared:  # the other ranks wait at the gate meanwhile
                            fcntl.flock(fd, fcntl.LOCK_SH)
                    else:
                        holder = _read_record(fd)
                        if not (
                            self.shared
                            and holder.get("run_id") == self.run_id
                            and _try_flock(fd, shared=True)
                        ):
                            raise OutputLocked(_refusal(self.out_dir, holder))
                except BaseException:
                    os.close(fd)
                    raise
        except OSError as err:
            if err.errno in _NO_LOCKS:
                logger.warning(
                    "%s: the file system offers no locks; nothing stops a second run here", self.out_dir
                )
                return self
            raise InputError(f"{self.out_dir}: cannot write output folder ({err.strerror or err})") from err
        self._fd = fd
        _held_fds.add(fd)
        return self

    def release(self) -> None:
        """Drop the lock, if this process holds it."""
        fd, self._fd = self._fd, None
        if fd not in _held_fds:
            return
        _held_fds.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _record(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "run_id": self.run_id,
        }

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _forget_in_child() -> None:
    """After a fork, in the child: close the held locks' files without unlocking them, so that
    only the process that took a lock holds it."""
    for fd in _held_fds:
        with suppress(OSError):
            os.close(fd)
    _held_fds.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_forget_in_child)


def check_unlocked(out_dir: str | Path, run_id: str | None = None) -> None:
    """Refuse at once when a run holds ``out_dir`` (other than the sharded run ``run_id``, whose
    ranks share it); writes nothing and keeps no lock.

    The CLI calls it before torch loads; the run's own :meth:`OutputLock.acquire` still decides.

    Raises:
        OutputLocked: another process holds the folder.
    """
    path = Path(out_dir).expanduser() / LOCK_NAME
    if fcntl is None or not path.is_file():  # a holder always has its lock file
        return
    try:
        with _gate(path.parent):
            fd = os.open(path, os.O_RDONLY)
            try:
                holder = None if _try_flock(fd) else _read_record(fd)
            finally:
                os.close(fd)
    except OSError:  # unreadable or no locks: the run reports what it finds
        return
    if holder is not None and not (run_id is not None and holder.get("run_id") == run_id):
        raise OutputLocked(_refusal(path.parent, holder))


@contextmanager
def _gate(folder: Path) -> Iterator[None]:
    """A brief exclusive flock on the folder itself, around taking the lock and its record."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_flock(fd: int, shared: bool = False) -> bool:
    """A non-blocking exclusive (or shared) flock on ``fd``; False when another open file holds a
    conflicting one."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_record(fd: int, record: dict[str, object]) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_record(fd: int) -> dict[str, object]:
    try:
        record = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _refusal(out_dir: Path, holder: dict[str, object]) -> str:
    """The one line a refused run prints."""
    if holder.get("pid") and holder.get("host"):
        who = f"pid {holder['pid']} on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
    else:
        who = "another process"
    return (
        f"{out_dir}: another vgtool run is writing here ({who}); wait for it to finish or stop it, "
        "or use another --out"
    )
