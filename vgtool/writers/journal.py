"""The results journal: one JSON line per image, appended and flushed as results are produced.

It is the run's source of truth: ``annotations.json`` is assembled from it at the end, and a run
that was interrupted resumes from it (images already in the journal are not processed again). The
ranks of a sharded run keep one journal each; the run's journals are read together.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vgtool.atomic import naming_errors


class Journal:
    """Append-only JSON-lines file, fsynced on :meth:`flush`.

    A write that fails (a full disk) raises an ``OSError`` that names the journal; it can leave a
    last line cut short, which the next :class:`Journal` on the file drops before appending.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_partial_line()
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _truncate_partial_line(self, chunk: int = 1 << 16) -> None:
        """Drop a last line cut short by a kill or a full disk, so appends start on a clean line.
        Reads back from the end only as far as the last newline."""
        try:
            handle = open(self.path, "rb+")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return
        with handle:
            end = position = handle.seek(0, os.SEEK_END)
            while position > 0:
                start = max(0, position - chunk)
                handle.seek(start)
                data = handle.read(position - start)
                if position == end and data.endswith(b"\n"):
                    return
                newline = data.rfind(b"\n")
                if newline >= 0:
                    handle.truncate(start + newline + 1)
                    return
                position = start
            handle.truncate(0)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        with naming_errors(self.path):
            self._handle.write(line)

    def flush(self) -> None:
        with naming_errors(self.path):
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self.flush()
        finally:
            with naming_errors(self.path):
                self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete records of a journal (a cut-off last line is ignored)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                break


def read_journals(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Yield the complete records of several journals, one journal after the other."""
    for path in paths:
        yield from read_journal(path)
