"""Images of one folder that share a name stem (``a.png`` and ``a.jpg``), found without a Python
object per image.

Tools that name label files by stem (YOLO, VOC) would write both images' labels to one file. Each
image's stem is hashed into a numpy array (8 bytes per image); only images whose hash is shared
are compared by their stems, so a million images with a handful of shared stems hold a few
megabytes of arrays for a moment, not a dictionary of a million strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vgtool.data.image_list import ImageList


@dataclass(frozen=True)
class SharedStems:
    """The images that share a stem with an earlier one (in list order).

    Attributes:
        first: the ``file_name`` of the first such image's earlier namesake, and its own.
        pairs: how many images share a stem with an earlier one.
    """

    first: tuple[str, str]
    pairs: int


def stem_key(file_name: str) -> str:
    """What two images of one folder share when their label files would collide: the
    ``file_name`` without its last suffix, case folded."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.rsplit("/", 1)[-1] else file_name
    return stem.casefold()


def find_shared_stems(entries: ImageList) -> SharedStems | None:
    """The images of ``entries`` whose :func:`stem_key` an earlier image has, or None.

    Each such image is paired with the first image of its stem; ``first`` is the pair of the
    earliest such image."""
    count = len(entries)
    hashes = np.fromiter((hash(stem_key(name)) for name in entries.file_names()), np.int64, count)
    order = np.argsort(hashes, kind="stable")  # equal hashes: positions ascending
    ordered = hashes[order]
    del hashes
    equal_next = ordered[1:] == ordered[:-1]
    del ordered
    shared = np.zeros(count, dtype=bool)  # places (in hash order) whose hash another image has
    shared[1:] |= equal_next
    shared[:-1] |= equal_next
    places = np.flatnonzero(shared)
    if not len(places):
        return None
    pairs = 0
    first: tuple[int, int] | None = None
    group: dict[str, int] = {}  # the stems of one hash, and the first position of each
    for k, place in enumerate(places.tolist()):
        if k and not equal_next[place - 1]:  # a new hash
            group = {}
        position = int(order[place])
        earlier = group.setdefault(stem_key(entries.file_name(position)), position)
        if earlier != position:
            pairs += 1
            if first is None or position < first[1]:
                first = (earlier, position)
    if first is None:  # only different stems with equal hashes
        return None
    return SharedStems(first=(entries.file_name(first[0]), entries.file_name(first[1])), pairs=pairs)
