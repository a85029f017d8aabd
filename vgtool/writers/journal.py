"""The results journal: one JSON line per image, appended and flushed as results are produced.

It is the run's source of truth: ``annotations.json`` is assembled from it at the end, and a run
that was interrupted resumes from it (images already in the journal are not processed again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Journal:
    """Append-only JSON-lines file, fsynced on :meth:`flush`."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_partial_line()
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _truncate_partial_line(self) -> None:
        """Drop a last line cut short by a kill, so appends start on a clean line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(
            json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        )

    def flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self.flush()
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
