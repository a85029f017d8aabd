"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it, which would race
# with the background writer threads.
_FILE_MODE = 0o666 & ~_current_umask()


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; outputs get the usual permissions
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
