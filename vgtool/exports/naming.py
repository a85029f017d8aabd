"""Export file names: one deterministic rule that keeps every image of a run apart.

Formats differ in how they place images:

- ``keep``: the run's ``file_name`` as it is (single-file formats: Label Studio, ODVG).
- ``tree``: folders kept, ``sub/a.jpg`` stays ``sub/a.jpg`` (COCO layout, LabelMe).
- ``flat``: folders joined with ``__``, ``sub/a.jpg`` becomes ``sub__a.jpg`` (YOLO, VOC).

Labels are named after the image's stem, so in ``tree`` and ``flat`` two images whose stems
match ignoring case (``a.png`` and ``a.jpg``; in ``flat`` also ``x/a.jpg`` and ``x__a.jpg``)
would share a label file. Each of them then gets its extension added to the stem
(``a_png.png``, ``a_jpg.jpg``); any still alike get the first 8 hex digits of the SHA-1 of
their ``file_name`` as well (``a_jpg_1f2e3d4c.jpg``). Names are computed over all the run's
images, so filtering boxes or classes never renames a file.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Literal

Layout = Literal["keep", "tree", "flat"]
FLAT_SEPARATOR = "__"


def _stem_and_suffix(file_name: str, layout: Layout) -> tuple[str, str]:
    path = PurePosixPath(file_name)
    parent = "" if path.parent == PurePosixPath(".") else path.parent.as_posix()
    if layout == "flat" and parent:
        return FLAT_SEPARATOR.join([*PurePosixPath(parent).parts, path.stem]), path.suffix
    return (f"{parent}/{path.stem}" if parent else path.stem), path.suffix


def _clashing(stems: dict[str, str]) -> set[str]:
    """The file names whose stem another file name shares, ignoring case."""
    counts = Counter(stem.casefold() for stem in stems.values())
    return {name for name, stem in stems.items() if counts[stem.casefold()] > 1}


def export_names(file_names: Iterable[str], layout: Layout) -> dict[str, str]:
    """Each run ``file_name`` -> its exported relative path (POSIX), unique and case-safe."""
    file_names = sorted(set(file_names))
    if layout == "keep":
        return {name: name for name in file_names}
    parts = {name: _stem_and_suffix(name, layout) for name in file_names}
    stems = {name: stem for name, (stem, _) in parts.items()}
    for name in _clashing(stems):
        suffix = parts[name][1].lstrip(".").lower()
        if suffix:
            stems[name] = f"{stems[name]}_{suffix}"
    for name in _clashing(stems):
        stems[name] = f"{stems[name]}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
    return {name: stems[name] + parts[name][1] for name in file_names}


def label_name(exported: str, extension: str) -> str:
    """The label file of an exported image: its stem with ``extension`` (``.txt``, ``.xml``)."""
    return PurePosixPath(exported).with_suffix(extension).as_posix()
