"""What one export writes: the run's images and boxes that pass the options, with exported names
and subsets. Every format writes from an :class:`ExportPlan`, never from the options."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from vgtool.errors import InputError
from vgtool.exports.naming import Layout, export_names
from vgtool.exports.options import ExportOptions
from vgtool.exports.run import FinishedRun, RunCategory, RunImage
from vgtool.exports.subsets import TRAIN, assign_subsets


@dataclass(frozen=True)
class ExportItem:
    """One exported image.

    Attributes:
        image: the run's image with only the boxes that passed the options.
        name: its exported relative path (POSIX), see :mod:`vgtool.exports.naming`.
        subset: ``train`` or ``val``.
    """

    image: RunImage
    name: str
    subset: str = TRAIN

    @property
    def stem(self) -> str:
        """``name`` without its extension (folders kept)."""
        return PurePosixPath(self.name).with_suffix("").as_posix()


@dataclass(frozen=True)
class ExportPlan:
    """The exported images and categories.

    Attributes:
        categories: the kept categories in run order (all, unless ``classes`` narrowed them).
        phrases: the run's phrases whose class is kept, in run order.
        dropped_boxes, dropped_images: what the options removed.
    """

    run: FinishedRun
    options: ExportOptions
    items: tuple[ExportItem, ...]
    categories: tuple[RunCategory, ...]
    phrases: tuple[str, ...]
    dropped_boxes: int = 0
    dropped_images: int = 0

    @property
    def subsets(self) -> tuple[str, ...]:
        """The subsets that hold images, ``train`` first; ``("train",)`` when none do."""
        present = {item.subset for item in self.items} or {TRAIN}
        return tuple(sorted(present, key=lambda s: (s != TRAIN, s)))

    @property
    def class_index(self) -> dict[int, int]:
        """Category id -> 0-based index in ``categories`` (YOLO class numbers)."""
        return {c.id: i for i, c in enumerate(self.categories)}

    def subset_items(self, subset: str) -> tuple[ExportItem, ...]:
        return tuple(item for item in self.items if item.subset == subset)


def _kept_categories(run: FinishedRun, classes: tuple[str, ...]) -> tuple[RunCategory, ...]:
    if not classes:
        return run.categories
    known = {c.name for c in run.categories}
    unknown = [name for name in classes if name not in known]
    if unknown:
        raise InputError(
            f"--classes: {', '.join(map(repr, unknown))} not among this run's classes "
            f"({', '.join(c.name for c in run.categories)})"
        )
    return tuple(c for c in run.categories if c.name in classes)


def plan_export(run: FinishedRun, options: ExportOptions, layout: Layout) -> ExportPlan:
    """Filter the run's boxes and images by ``options`` and name the rest for ``layout``."""
    categories = _kept_categories(run, options.classes)
    kept_ids = {c.id for c in categories}
    names = export_names((image.file_name for image in run.images), layout)
    kept: list[tuple[RunImage, str]] = []
    dropped_boxes = dropped_images = 0
    for image in run.images:
        boxes = tuple(b for b in image.boxes if b.category_id in kept_ids and b.score >= options.min_score)
        dropped_boxes += len(image.boxes) - len(boxes)
        if not boxes and not options.keep_empty:
            dropped_images += 1
            continue
        kept.append((replace(image, boxes=boxes), names[image.file_name]))
    subsets = assign_subsets(
        (image.file_name for image, _ in kept), val_fraction=options.val_fraction, seed=options.seed
    )
    kept_names = {c.name for c in categories}
    return ExportPlan(
        run=run,
        options=options,
        items=tuple(ExportItem(image, name, subsets[image.file_name]) for image, name in kept),
        categories=categories,
        phrases=tuple(text for text, category in run.phrases if category in kept_names),
        dropped_boxes=dropped_boxes,
        dropped_images=dropped_images,
    )
