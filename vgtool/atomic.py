"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", encoding: str | None = None, *, durable: bool = True
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` in one rename,
    so readers see either the old or the new file, never half of one. On error it is removed.
    The file gets the permissions a plain ``open`` would give it (0666 less the umask).

    ``durable`` also fsyncs the data before the rename, so the file survives a power cut, not just
    a killed process. Outputs that can be made again from the journal (crops, overlays) skip it:
    on a real disk an fsync per file costs more than drawing the file."""
    path = Path(path)
    # One temporary name per path, process and thread: no two writers ever share it, and opening
    # it is one system call (a random mkstemp name costs several, which shows with many crops).
    # The mode is masked by the umask as for a plain open; O_NOFOLLOW refuses a planted symlink.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with naming_errors(path, tmp):
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, mode, encoding=encoding) as handle:
                yield handle
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def naming_errors(path: str | Path, *aliases: str | Path) -> Iterator[None]:
    """Name ``path`` in the system errors of the block that name no file (a ``write`` or ``fsync``
    of an open file: a full disk, a read-only file system) or one of its ``aliases`` (a temporary
    file), so that a message can say which output could not be written."""
    try:
        yield
    except OSError as err:
        if err.errno is None or err.filename not in (None, *aliases, *map(str, aliases)):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
