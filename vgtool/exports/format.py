"""The seam every export format plugs into: a name, a naming layout, where images go, a writer."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vgtool.exports.naming import Layout
from vgtool.exports.plan import ExportItem, ExportPlan


class ExportFormat(Protocol):
    """One annotation-tool format.

    Attributes:
        name: the ``--to`` value.
        layout: how exported images are named (see :mod:`vgtool.exports.naming`).
        summary: one line for ``--help``.
    """

    name: str
    layout: Layout
    summary: str

    def image_path(self, item: ExportItem) -> str:
        """Where ``item``'s image goes, relative to the export folder (POSIX)."""
        ...

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        """Write the label files of ``plan`` under ``out_dir``.

        Returns:
            Each exported image's run ``file_name`` -> the label files (relative POSIX paths)
            that hold its boxes.
        """
        ...
