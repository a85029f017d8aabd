"""Find the images a run should process.

A PATH argument may be a folder, an image file, a glob pattern, or a text file listing one image
path per line. Every image gets a ``file_name`` relative to the input root, the name it carries in
``annotations.json`` and under ``overlays/``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgtool.data.output_folders import OutputFolders
from vgtool.errors import InputError

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
LIST_SUFFIXES = (".txt", ".lst", ".list")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageEntry:
    """One image to process.

    Attributes:
        path: where to read it (as found, symlinks not resolved).
        file_name: POSIX path relative to the input root; unique within a run.
    """

    path: Path
    file_name: str


def _normalise_exts(exts: Iterable[str] | None) -> tuple[str, ...]:
    if not exts:
        return DEFAULT_EXTENSIONS
    return tuple(("." + e.lower().lstrip(".")) for e in exts)


def _is_image_file(path: Path, exts: tuple[str, ...]) -> bool:
    """An image by its extension: a file, or a dangling symlink (kept so that it is reported)."""
    if path.suffix.lower() not in exts:
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def _walk(folder: Path, recursive: bool, exts: tuple[str, ...], outputs: OutputFolders) -> list[Path]:
    """The images in ``folder``; descending, the output folders of runs are left out (and their
    whole trees are not walked)."""
    if not recursive:
        try:
            return [p for p in folder.iterdir() if _is_image_file(p, exts)]
        except OSError as err:
            raise InputError(f"{folder}: cannot list folder ({err.strerror})") from err
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if (
            real in seen_dirs  # a symlink loop or a second route to the same folder
            or outputs.excluded(real, folder=True)
            or (dirpath != str(folder) and outputs.other_run(dirpath, filenames))
        ):
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if _is_image_file(path, exts):
                found.append(path)
    return found


def _read_list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read image list ({err})") from err
    base = path.parent
    entries = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            entries.append(p if p.is_absolute() else base / p)
    return entries


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    prefix: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        prefix.append(part)
    return Path(*prefix) if prefix else Path(".")


def list_images(
    inputs: Sequence[str | Path],
    recursive: bool = False,
    extensions: Iterable[str] | None = None,
    *,
    exclude: Sequence[str | Path] = (),
    warn: Callable[[str], None] | None = None,
) -> list[ImageEntry]:
    """Expand PATH arguments into a sorted, de-duplicated list of images.

    Outputs are never inputs: nothing under an ``exclude`` folder is listed, however the paths are
    written, and folders holding another run's outputs that are met while descending into a folder
    or matching a glob are skipped, with one warning (see :mod:`vgtool.data.output_folders`).

    Args:
        inputs: folders, image files, glob patterns, or ``.txt``/``.lst`` files listing images.
        recursive: descend into sub-folders of folder inputs (symlink loops are cut).
        extensions: file extensions to accept in folders and globs (default: common image types).
        exclude: folders never read, such as the run's output folder.
        warn: receives the warning line (default: the ``logging`` warning of this module).

    Raises:
        InputError: an input does not exist or yields no image.
    """
    exts = _normalise_exts(extensions)
    outputs = OutputFolders(exclude)
    groups: list[tuple[Path, list[Path]]] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            groups.append((path, _walk(path, recursive, exts, outputs)))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            listed = _read_list_file(path)
            groups.append((path.parent, listed))
        elif path.is_file() or path.is_symlink():
            groups.append((path.parent, [path]))
        elif glob.has_magic(text):
            root = _glob_root(text)
            matches = [Path(m) for m in glob.glob(text, recursive=recursive)]
            matches = [
                m
                for m in matches
                if _is_image_file(m, exts)
                and not outputs.excluded(m)
                and not outputs.under_other_run(m, root)
            ]
            groups.append((root, matches))
        else:
            raise InputError(f"{text}: no such file, folder or glob match")
    if not groups:
        raise InputError("no input paths given")
    roots = [os.path.abspath(root) for root, _ in groups]
    common = Path(os.path.commonpath(roots)) if len(set(roots)) > 1 else Path(roots[0])
    entries: dict[str, ImageEntry] = {}
    for _, paths in groups:
        for path in paths:
            if outputs.excluded(path):
                continue
            absolute = os.path.abspath(path)
            try:
                rel = Path(absolute).relative_to(common).as_posix()
            except ValueError:
                rel = Path(absolute).name
            entries.setdefault(rel, ImageEntry(path=Path(path), file_name=rel))
    if not entries:
        where = ", ".join(map(str, inputs))
        if outputs.skipped or outputs.other_runs:
            raise InputError(
                f"no images found in {where}: only outputs of vgtool runs, which are never inputs"
            )
        raise InputError(f"no images found in {where} (extensions: {' '.join(exts)})")
    if (message := outputs.warning()) is not None:
        (warn or logger.warning)(message)
    return [entries[k] for k in sorted(entries)]


def image_root(entries: Sequence[ImageEntry]) -> Path | None:
    """The absolute folder every entry's ``file_name`` is relative to, or None when the entries
    have no single one (an image-list file naming images outside the common folder)."""
    roots = set()
    for entry in entries:
        absolute = Path(os.path.abspath(entry.path))
        parts = len(Path(entry.file_name).parts)
        if absolute.parts[-parts:] != Path(entry.file_name).parts:
            return None
        roots.add(Path(*absolute.parts[:-parts]) if len(absolute.parts) > parts else Path(absolute.anchor))
        if len(roots) > 1:
            return None
    return roots.pop() if roots else None
