"""Find the images a run should process.

A PATH argument may be a folder, an image file, a glob pattern, or a text file listing one image
path per line. Every image gets a ``file_name`` relative to the input root, the name it carries in
``annotations.json`` and under ``overlays/``.

The listing streams: folders are read entry by entry (a batch of names at a time), globs match by
match and image-list files line by line, and the images go straight into a compact
:class:`~vgtool.data.image_list.ImageList` (about 40 bytes per image), so a million images cost
tens of megabytes, not a Python object each.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vgtool.data.image_list import ImageEntry, ImageList, ImageListBuilder, entry_root
from vgtool.data.output_folders import OutputFolders
from vgtool.errors import InputError
from vgtool.writers.run_folder import JOURNAL_NAME, RUN_KEY_NAME

__all__ = ["DEFAULT_EXTENSIONS", "LIST_SUFFIXES", "ImageEntry", "ImageList", "image_root", "list_images"]

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
LIST_SUFFIXES = (".txt", ".lst", ".list")
FOLDER_BATCH = 1 << 16  # names of one folder held at once before they go to the image list
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Input:
    """One PATH argument, recognised."""

    kind: Literal["folder", "list", "file", "glob"]
    text: str
    path: Path
    root: Path


def _normalise_exts(exts: Iterable[str] | None) -> tuple[str, ...]:
    if not exts:
        return DEFAULT_EXTENSIONS
    return tuple(("." + e.lower().lstrip(".")) for e in exts)


def _suffix(name: str) -> str:
    """``Path(name).suffix``, without making a path: from the last dot, unless it starts or ends
    the name."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _is_image_file(path: Path, exts: tuple[str, ...]) -> bool:
    """An image by its extension: a file, or a dangling symlink (kept so that it is reported)."""
    if path.suffix.lower() not in exts:
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def _file_name(path: Path, common: Path) -> str:
    """``path`` relative to the input root ``common``; only its name when it lies outside."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(common).as_posix()
    except ValueError:
        return absolute.name


def _add_path(builder: ImageListBuilder, path: Path, outputs: OutputFolders, common: Path) -> None:
    if not outputs.excluded(path):
        builder.add(_file_name(path, common), str(path))


def _add_folder_files(
    builder: ImageListBuilder,
    folder: str,
    entries: Iterable[os.DirEntry],
    exts: tuple[str, ...],
    outputs: OutputFolders,
    common: Path,
    subfolders: list[str] | None = None,
) -> None:
    """Add the images among ``entries`` (of ``folder``), sorted a batch at a time; with
    ``subfolders``, collect there the names of the entries that are folders, as ``os.walk`` does.

    The first image's path and ``file_name`` are made the slow way; the others' are that image's
    prefixes followed by their own names.
    """
    batch: list[str] = []
    prefixes: tuple[str, str] | None = None  # name prefix and path prefix, from the first image
    files_excluded: bool | None = None  # the folder, for its files that are not symlinks

    def flush() -> None:
        batch.sort()
        if prefixes is not None:
            builder.add_folder(*prefixes, batch)
        else:  # the first image's path does not end with its name: each the slow way
            for name in batch:
                builder.add(_file_name(Path(folder) / name, common), str(Path(folder) / name))
        batch.clear()

    for entry in entries:
        name = entry.name
        if subfolders is not None:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(name)
                continue
        if _suffix(name).lower() not in exts:
            continue
        if entry.is_symlink():  # where the link points decides: the slow way
            path = Path(folder) / name
            if not _is_image_file(path, exts) or outputs.excluded(path):
                continue
        else:
            if not entry.is_file():  # the type read with the folder: no system call
                continue
            if files_excluded is None:
                files_excluded = outputs.excluded(Path(folder) / name)
            if files_excluded:
                continue
        if not batch and prefixes is None:
            first = Path(folder) / name
            path_text, file_name = str(first), _file_name(first, common)
            if path_text.endswith(name) and file_name.endswith(name):
                prefixes = (file_name[: -len(name)], path_text[: -len(name)])
        batch.append(name)
        if len(batch) >= FOLDER_BATCH:
            flush()
    if batch:
        flush()


def _run_files(folder: str) -> list[str]:
    """Which of a run's own files ``folder`` holds as other than folders (as ``os.walk`` would
    list its files), without listing it."""
    found = []
    for name in (RUN_KEY_NAME, JOURNAL_NAME):
        path = os.path.join(folder, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            found.append(name)
    return found


def _add_tree(
    builder: ImageListBuilder, top: str, exts: tuple[str, ...], outputs: OutputFolders, common: Path
) -> None:
    """The images under ``top``, folder by folder in the order of ``os.walk`` (sub-folders sorted,
    symlinks followed, unreadable folders passed over); the output folders of runs are left out,
    and their whole trees are not walked, nor a folder met a second time (a symlink loop)."""
    seen_dirs: set[str] = set()
    stack = [top]
    while stack:
        dirpath = stack.pop()
        try:
            scan = os.scandir(dirpath)
        except OSError:
            continue
        with scan:
            real = os.path.realpath(dirpath)
            if (
                real in seen_dirs  # a symlink loop or a second route to the same folder
                or outputs.excluded(real, folder=True)
                or (dirpath != top and outputs.other_run(dirpath, _run_files(dirpath)))
            ):
                continue
            seen_dirs.add(real)
            subfolders: list[str] = []
            try:
                _add_folder_files(builder, dirpath, scan, exts, outputs, common, subfolders)
            except OSError:  # the folder failed while being read: passed over, as os.walk does
                continue
        stack.extend(os.path.join(dirpath, name) for name in sorted(subfolders, reverse=True))


def _list_file_lines(path: Path) -> Iterator[str]:
    """The lines of an image-list file, as ``str.splitlines`` cuts them, read as they come."""
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                yield from line.splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read image list ({err})") from err


def _list_file_paths(path: Path) -> Iterator[Path]:
    base = path.parent
    for line in _list_file_lines(path):
        line = line.strip()
        if line and not line.startswith("#"):
            listed = Path(line).expanduser()
            yield listed if listed.is_absolute() else base / listed


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
) -> ImageList:
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

    Returns:
        The images in ``file_name`` order (by code point); of images that get the same
        ``file_name``, the first found (inputs in order) is kept.

    Raises:
        InputError: an input does not exist or yields no image.
    """
    exts = _normalise_exts(extensions)
    outputs = OutputFolders(exclude)
    sources = [_recognise(raw, recursive) for raw in inputs]
    if not sources:
        raise InputError("no input paths given")
    roots = [os.path.abspath(source.root) for source in sources]
    common = Path(os.path.commonpath(roots)) if len(set(roots)) > 1 else Path(roots[0])
    builder = ImageListBuilder()
    for source in sources:
        _add_input(builder, source, recursive, exts, outputs, common)
    if not len(builder):
        where = ", ".join(map(str, inputs))
        if outputs.skipped or outputs.other_runs:
            raise InputError(
                f"no images found in {where}: only outputs of vgtool runs, which are never inputs"
            )
        raise InputError(f"no images found in {where} (extensions: {' '.join(exts)})")
    if (message := outputs.warning()) is not None:
        (warn or logger.warning)(message)
    return builder.build()


def _recognise(raw: str | Path, recursive: bool) -> _Input:
    """What kind of input ``raw`` is. The inputs are all recognised before any is listed (the
    input root depends on all of them); the errors an input can raise are raised here, so the
    first bad input, in order, is the one reported."""
    text = str(raw)
    path = Path(text).expanduser()
    if path.is_dir():
        if not recursive:
            try:
                os.scandir(path).close()
            except OSError as err:
                raise InputError(f"{path}: cannot list folder ({err.strerror})") from err
        return _Input("folder", text, path, path)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        for _ in _list_file_lines(path):  # read through once: an unreadable list fails here
            pass
        return _Input("list", text, path, path.parent)
    if path.is_file() or path.is_symlink():
        return _Input("file", text, path, path.parent)
    if glob.has_magic(text):
        return _Input("glob", text, path, _glob_root(text))
    raise InputError(f"{text}: no such file, folder or glob match")


def _add_input(
    builder: ImageListBuilder,
    source: _Input,
    recursive: bool,
    exts: tuple[str, ...],
    outputs: OutputFolders,
    common: Path,
) -> None:
    if source.kind == "folder" and recursive:
        _add_tree(builder, os.fspath(source.path), exts, outputs, common)
    elif source.kind == "folder":
        try:
            with os.scandir(source.path) as scan:
                _add_folder_files(builder, os.fspath(source.path), scan, exts, outputs, common)
        except OSError as err:
            raise InputError(f"{source.path}: cannot list folder ({err.strerror})") from err
    elif source.kind == "list":
        for path in _list_file_paths(source.path):
            _add_path(builder, path, outputs, common)
    elif source.kind == "file":
        _add_path(builder, source.path, outputs, common)
    else:
        for match in glob.iglob(source.text, recursive=recursive):
            path = Path(match)
            if (
                _is_image_file(path, exts)
                and not outputs.excluded(path)
                and not outputs.under_other_run(path, source.root)
            ):
                builder.add(_file_name(path, common), str(path))


def image_root(entries: Sequence[ImageEntry]) -> Path | None:
    """The absolute folder every entry's ``file_name`` is relative to, or None when the entries
    have no single one (an image-list file naming images outside the common folder)."""
    if isinstance(entries, ImageList):
        return entries.image_root()
    roots = set()
    for entry in entries:
        roots.add(entry_root(entry))
        if None in roots or len(roots) > 1:
            return None
    return roots.pop() if roots else None
