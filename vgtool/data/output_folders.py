"""Outputs are never inputs: which folders the image listing must not read.

Two kinds: the run's own output folder (``--out``) with everything under it, however either path is
written, and the output folders of other runs met while descending into an input folder. A folder
is inside ``--out`` when it or one of its real ancestors *is* ``--out``, compared by device and
inode rather than by name, so relative and absolute paths, symlinks, bind mounts and the letter
case of case-insensitive file systems all agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vgtool.writers.run_folder import JOURNAL_NAME, RUN_KEY_NAME, is_run_folder


class OutputFolders:
    """What the listing skips, and what it skipped.

    Attributes:
        skipped: files and folders skipped because they are under an excluded folder.
        other_runs: output folders of other runs that were skipped.
    """

    def __init__(self, exclude: Iterable[str | Path] = ()):
        self._ids = set()
        for folder in exclude:
            try:
                stat = os.stat(Path(folder).expanduser())
            except OSError:  # not there yet: nothing can be listed from it
                continue
            self._ids.add((stat.st_dev, stat.st_ino))
        self._real: dict[str, str] = {}
        self._inside: dict[str, bool] = {}
        self._runs: dict[str, bool] = {}
        self.skipped = 0
        self.other_runs: list[str] = []

    def excluded(self, path: str | Path, *, folder: bool = False) -> bool:
        """Whether ``path`` (a file, or a ``folder``) lies under an excluded folder; a symlinked
        file counts where its target lies."""
        if not self._ids:
            return False
        path = os.fspath(path)
        if folder:
            real = self._realpath(path)
        elif os.path.islink(path):
            real = os.path.dirname(os.path.realpath(path))
        else:
            real = self._realpath(os.path.dirname(path) or ".")
        if self._real_inside(real):
            self.skipped += 1
            return True
        return False

    def _realpath(self, folder: str) -> str:
        real = self._real.get(folder)
        if real is None:
            real = self._real[folder] = os.path.realpath(folder)
        return real

    def _real_inside(self, real: str) -> bool:
        """``real`` (a resolved folder) or one of its ancestors is excluded; memoised per folder."""
        known = self._inside.get(real)
        if known is None:
            try:
                stat = os.stat(real)
                known = (stat.st_dev, stat.st_ino) in self._ids
            except OSError:
                known = False
            parent = os.path.dirname(real)
            known = known or (parent != real and self._real_inside(parent))
            self._inside[real] = known
        return known

    def other_run(self, folder: str | Path, file_names: Iterable[str] | None = None) -> bool:
        """Whether ``folder``, met while descending, holds another run (``file_names``: its files,
        when the caller has them already); it is then recorded in :attr:`other_runs`."""
        key = os.fspath(folder)
        if key not in self._runs:
            if file_names is None:
                found = is_run_folder(key)
            else:
                names = set(file_names)
                found = RUN_KEY_NAME in names and JOURNAL_NAME in names
            self._runs[key] = found
            if found:
                self.other_runs.append(key)
        return self._runs[key]

    def under_other_run(self, path: Path, root: Path) -> bool:
        """Whether a folder between ``root`` (not included) and ``path`` holds another run."""
        for parent in path.parents:
            if parent == root or parent in root.parents:
                return False
            if self.other_run(parent):
                return True
        return False

    def warning(self) -> str | None:
        """One line naming the other runs' folders that were skipped, or None."""
        if not self.other_runs:
            return None
        shown = ", ".join(self.other_runs[:3]) + (", ..." if len(self.other_runs) > 3 else "")
        count = len(self.other_runs)
        folders = "a folder" if count == 1 else f"{count} folders"
        return (
            f"skipped {folders} holding the outputs of another vgtool run ({shown}); "
            "outputs are not read as inputs"
        )
