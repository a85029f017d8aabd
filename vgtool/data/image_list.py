"""The images of a run, stored compactly: a million of them in a few tens of megabytes.

:func:`~vgtool.data.listing.list_images` returns an :class:`ImageList`, a read-only sequence of
:class:`ImageEntry` made on demand. It keeps, per image, its ``file_name`` as UTF-8 bytes in one
buffer (with an offsets array) and the number of its *prefix pair*: its path is the pair's path
prefix followed by the end of its ``file_name``. Images found in one input share one pair, so a
listing costs about 40 bytes per image instead of half a kilobyte of Python objects, holds no
per-image objects that a forked DataLoader worker would copy by touching their reference counts,
and pickles as a handful of buffers.

:class:`ImageListBuilder` collects the images and sorts them by ``file_name`` in chunks, merging
the sorted chunks at the end, so that at no time are a million Python objects alive at once.
"""

from __future__ import annotations

import heapq
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice, pairwise, repeat
from pathlib import Path
from typing import overload

# File names are stored as UTF-8; "surrogatepass" keeps names that are not valid UTF-8 on disk
# (decoded by Python with lone surrogates) and, unlike "surrogateescape", keeps code point order.
_ENCODING = ("utf-8", "surrogatepass")
_SEPARATORS = {os.sep, os.altsep} - {None}


@dataclass(frozen=True)
class ImageEntry:
    """One image to process.

    Attributes:
        path: where to read it (as found, symlinks not resolved).
        file_name: POSIX path relative to the input root; unique within a run.
    """

    path: Path
    file_name: str


def entry_root(entry: ImageEntry) -> Path | None:
    """The absolute folder ``entry.file_name`` is relative to, or None when the entry's path does
    not end with its ``file_name``."""
    absolute = Path(os.path.abspath(entry.path))
    name_parts = Path(entry.file_name).parts
    if absolute.parts[-len(name_parts) :] != name_parts:
        return None
    if len(absolute.parts) > len(name_parts):
        return Path(*absolute.parts[: -len(name_parts)])
    return Path(absolute.anchor)


class ImageList(Sequence[ImageEntry]):
    """A read-only sequence of images; indexing and iterating make :class:`ImageEntry` objects.

    Slices and :meth:`take` share the buffers of the list they come from. Pickling sends the
    buffers (only the images selected, when a slice uses less than half of them).
    """

    __slots__ = ("_by_name", "_names", "_offsets", "_order", "_prefixes", "_rows", "_sorted")
    __hash__ = None  # type: ignore[assignment]  # equality is by content, as for a list

    def __init__(
        self,
        names: bytes | bytearray,
        offsets: array,
        rows: array,
        prefixes: Sequence[tuple[str, str]],
        order: array,
        *,
        is_sorted: bool = False,
    ):
        """
        Args:
            names: every stored ``file_name``, UTF-8, one after the other.
            offsets: ``[N + 1]`` where each stored name starts in ``names``, then the end.
            rows: ``[N]`` each stored image's prefix pair (an index into ``prefixes``).
            prefixes: ``(path_prefix, name_prefix)`` pairs: an image whose ``file_name`` is
                ``name_prefix + tail`` lies at ``path_prefix + tail``.
            order: the stored images this list holds, in its order (indices into ``rows``).
            is_sorted: ``order`` is in ``file_name`` order without repeats (lets :meth:`find`
                search by halves).
        """
        self._names = names
        self._offsets = offsets
        self._rows = rows
        self._prefixes = tuple(prefixes)
        self._order = order
        self._sorted = is_sorted
        self._by_name: array | None = None  # positions in file_name order, made by find if needed

    @classmethod
    def from_entries(cls, entries: Iterable[ImageEntry]) -> ImageList:
        """The images of ``entries`` in their order, stored compactly; an :class:`ImageList` is
        returned as it is."""
        if isinstance(entries, ImageList):
            return entries
        names = bytearray()
        offsets = array("Q", [0])
        rows = array("I")
        prefixes: list[tuple[str, str]] = []
        row_of: dict[tuple[str, str], int] = {}
        for entry in entries:
            pair = _split(entry.file_name, str(entry.path))
            row = row_of.setdefault(pair, len(prefixes))
            if row == len(prefixes):
                prefixes.append(pair)
            names += entry.file_name.encode(*_ENCODING)
            offsets.append(len(names))
            rows.append(row)
        keys = (names[offsets[k] : offsets[k + 1]] for k in range(len(rows)))
        is_sorted = all(a < b for a, b in pairwise(keys))
        order = array("I", range(len(rows)))
        return cls(names, offsets, rows, prefixes, order, is_sorted=is_sorted)

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, index: int) -> ImageEntry: ...

    @overload
    def __getitem__(self, index: slice) -> ImageList: ...

    def __getitem__(self, index: int | slice) -> ImageEntry | ImageList:
        if isinstance(index, slice):
            step = 1 if index.step is None else index.step
            return self._view(self._order[index], self._sorted and step > 0)
        return self._entry(self._order[index])

    def __iter__(self) -> Iterator[ImageEntry]:
        for stored in self._order:
            yield self._entry(stored)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, ImageEntry):
            return False
        position = self.find(value.file_name)
        return position is not None and self[position] == value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes | bytearray):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"ImageList({len(self)} images)"

    def __reduce__(self) -> tuple:
        source = self if 2 * len(self._order) >= len(self._rows) else self._compacted()
        return (
            _restore,
            (
                source._names,
                source._offsets,
                source._rows,
                source._prefixes,
                source._order,
                source._sorted,
            ),
        )

    def file_name(self, position: int) -> str:
        """The ``file_name`` at ``position``, without making its entry."""
        return self._file_name(self._order[position])

    def file_names(self) -> Iterator[str]:
        """Every ``file_name`` in order, without making the entries (much cheaper to iterate)."""
        return map(self._file_name, self._order)

    def find(self, file_name: str, near: int | None = None) -> int | None:
        """The position of the image named ``file_name``, or None (the first one, should a list
        made by :meth:`take` or :meth:`from_entries` hold the name twice).

        Searches by halves: a list in ``file_name`` order (as
        :func:`~vgtool.data.listing.list_images` returns it) directly, any other through an index
        of its positions in name order, made at its first search (4 bytes per image).

        Args:
            near: in a list in ``file_name`` order, a position to look at first (where a journal
                recorded the image); when the image is there, no search is made.
        """
        key = file_name.encode(*_ENCODING)
        count = len(self._order)
        if self._sorted:
            if near is not None and 0 <= near < count and self._key(self._order[near]) == key:
                return near
            low = self._lower_bound(key, count, self._order.__getitem__)
            return low if low < count and self._key(self._order[low]) == key else None
        by_name = self._name_index()
        low = self._lower_bound(key, count, lambda place: self._order[by_name[place]])
        return by_name[low] if low < count and self._key(self._order[by_name[low]]) == key else None

    def take(self, positions: Iterable[int]) -> ImageList:
        """The images at ``positions``, in that order, sharing this list's buffers."""
        order = array(self._order.typecode, map(self._order.__getitem__, positions))
        increasing = all(a < b for a, b in pairwise(order))
        return self._view(order, self._sorted and increasing)

    def image_root(self) -> Path | None:
        """The absolute folder every ``file_name`` is relative to, or None when there is no
        single one (see :func:`~vgtool.data.listing.image_root`). One image per prefix pair is
        enough: the others of the pair end in whole folders and a name, which do not change it."""
        one_per_row = dict(zip(map(self._rows.__getitem__, self._order), self._order, strict=True))
        roots = set()
        for row, stored in one_per_row.items():
            path_prefix = self._prefixes[row][0]
            if path_prefix and path_prefix[-1] not in _SEPARATORS:  # a pair of one image's own
                members = (s for s in self._order if self._rows[s] == row)
            else:
                members = iter((stored,))
            for member in members:
                roots.add(entry_root(self._entry(member)))
                if None in roots or len(roots) > 1:
                    return None
        return roots.pop() if roots else None

    def _key(self, stored: int) -> bytes:
        return self._names[self._offsets[stored] : self._offsets[stored + 1]]

    def _lower_bound(self, key: bytes, count: int, stored_at: Callable[[int], int]) -> int:
        """The first of ``count`` places whose name (``stored_at(place)`` is its stored image)
        is not below ``key``, the names being in order."""
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            if self._key(stored_at(middle)) < key:
                low = middle + 1
            else:
                high = middle
        return low

    def _name_index(self) -> array:
        """The positions of an unsorted list in ``file_name`` order (equal names: first first)."""
        if self._by_name is None:
            order = self._order
            ranked = sorted(range(len(order)), key=lambda k: self._key(order[k]))
            self._by_name = array("I", ranked)
        return self._by_name

    def _file_name(self, stored: int) -> str:
        return str(self._key(stored), *_ENCODING)

    def _entry(self, stored: int) -> ImageEntry:
        file_name = self._file_name(stored)
        path_prefix, name_prefix = self._prefixes[self._rows[stored]]
        return ImageEntry(path=Path(path_prefix + file_name[len(name_prefix) :]), file_name=file_name)

    def _view(self, order: array, is_sorted: bool) -> ImageList:
        return ImageList(self._names, self._offsets, self._rows, self._prefixes, order, is_sorted=is_sorted)

    def _compacted(self) -> ImageList:
        """A copy holding only this list's images."""
        names = bytearray()
        offsets = array("Q", [0])
        rows = array(self._rows.typecode)
        for stored in self._order:
            names += self._key(stored)
            offsets.append(len(names))
            rows.append(self._rows[stored])
        order = array(self._order.typecode, range(len(self._order)))
        return ImageList(names, offsets, rows, self._prefixes, order, is_sorted=self._sorted)


def _restore(
    names: bytes | bytearray,
    offsets: array,
    rows: array,
    prefixes: Sequence[tuple[str, str]],
    order: array,
    is_sorted: bool,
) -> ImageList:
    return ImageList(names, offsets, rows, prefixes, order, is_sorted=is_sorted)


def _split(file_name: str, path: str) -> tuple[str, str]:
    """``(path_prefix, name_prefix)`` for the longest run of whole trailing folders and name of
    ``file_name`` that also ends ``path``; ``(path, file_name)`` when not even the name does."""
    start = 0
    while True:
        tail = file_name[start:]
        if tail and path.endswith(tail):
            before = len(path) - len(tail)
            if before == 0 or path[before - 1] in _SEPARATORS:
                return path[:before], file_name[:start]
        start = file_name.find("/", start) + 1
        if start == 0:
            return path, file_name


class ImageListBuilder:
    """Collects images, then :meth:`build` sorts them by ``file_name`` and drops repeats (the
    first image added under a name wins).

    Once ``chunk`` images have come since the last sort (checked after each call), they are
    sorted; :meth:`build` merges the sorted chunks and hands its buffers to the list, so a builder
    builds once.
    """

    chunk = 1 << 17

    def __init__(self) -> None:
        self._names = bytearray()
        self._offsets = array("Q", [0])
        self._rows = array("I")
        self._prefixes: list[tuple[str, str]] = []
        self._row_of: dict[tuple[str, str], int] = {}
        self._last: tuple[str, str, int] = ("", "", -1)  # path_prefix, name_prefix, row
        self._runs: list[array] = []
        self._unsorted_from = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, file_name: str, path: str) -> None:
        """One image named ``file_name`` that lies at ``path``."""
        path_prefix, name_prefix, row = self._last
        if (
            row < 0
            or not path.startswith(path_prefix)
            or not file_name.startswith(name_prefix)
            or path[len(path_prefix) :] != file_name[len(name_prefix) :]
        ):
            path_prefix, name_prefix = _split(file_name, path)
            row = self._row(path_prefix, name_prefix)
            self._last = (path_prefix, name_prefix, row)
        self._names += file_name.encode(*_ENCODING)
        self._offsets.append(len(self._names))
        self._rows.append(row)
        self._sort_if_full()

    def add_folder(self, name_prefix: str, path_prefix: str, names: Sequence[str]) -> None:
        """Images named ``name_prefix + name`` that lie at ``path_prefix + name``, for each of
        ``names`` (the names of files in one folder)."""
        if not names:
            return
        path_head, name_head = _split(name_prefix + names[0], path_prefix + names[0])
        folders = path_prefix[len(path_head) :]  # the folders both prefixes end with
        if len(path_head) > len(path_prefix) or name_prefix[len(name_head) :] != folders:
            for name in names:  # the prefixes do not end in the same folders: one by one
                self.add(name_prefix + name, path_prefix + name)
            return
        row = self._row(path_head, name_head)
        encoded = [(name_prefix + name).encode(*_ENCODING) for name in names]
        self._offsets.extend(islice(accumulate(map(len, encoded), initial=len(self._names)), 1, None))
        self._names += b"".join(encoded)
        self._rows.extend(repeat(row, len(encoded)))
        self._sort_if_full()

    def build(self) -> ImageList:
        """The images in ``file_name`` order, each name once."""
        self._sort_chunk()
        runs, self._runs = self._runs, []
        if not runs:
            order = array("I")
        elif all(self._key(a[-1]) < self._key(b[0]) for a, b in pairwise(runs)):
            order = runs[0]  # already in order one after the other (folders listed in order)
            for run in runs[1:]:
                order.extend(run)
        else:
            order = array("I")
            last = None
            for key, stored in heapq.merge(*map(self._keyed, runs)):
                if key != last:  # repeats: the first added comes first
                    order.append(stored)
                    last = key
        return ImageList(self._names, self._offsets, self._rows, self._prefixes, order, is_sorted=True)

    def _row(self, path_prefix: str, name_prefix: str) -> int:
        row = self._row_of.get((path_prefix, name_prefix))
        if row is None:
            row = self._row_of[(path_prefix, name_prefix)] = len(self._prefixes)
            self._prefixes.append((path_prefix, name_prefix))
        return row

    def _key(self, stored: int) -> bytes:
        return self._names[self._offsets[stored] : self._offsets[stored + 1]]

    def _keyed(self, run: array) -> Iterator[tuple[bytes, int]]:
        return ((self._key(stored), stored) for stored in run)

    def _sort_if_full(self) -> None:
        if len(self._rows) - self._unsorted_from >= self.chunk:
            self._sort_chunk()

    def _sort_chunk(self) -> None:
        """Sort the images added since the last chunk, dropping repeats among them."""
        start, stop = self._unsorted_from, len(self._rows)
        if start == stop:
            return
        keys = [self._key(stored) for stored in range(start, stop)]
        run = array("I")
        last = None
        for rank in sorted(range(len(keys)), key=keys.__getitem__):  # stable: first added first
            if keys[rank] != last:
                run.append(start + rank)
                last = keys[rank]
        self._runs.append(run)
        self._unsorted_from = stop
