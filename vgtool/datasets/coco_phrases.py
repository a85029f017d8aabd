"""Read "COCO with phrases": COCO detection JSON whose boxes are tied to phrases.

Standard ``images``, ``categories`` and ``annotations`` (``bbox`` xywh pixels), where an annotation may
carry a phrase and a score: in ``"attributes": {"phrase", "score"}`` (what CVAT and datumaro keep and
re-export), else as top-level ``phrase``/``score`` (vgtool's own ``annotations.json``); without one the
category name is the phrase. An optional top-level ``phrases`` list,
``{"id", "image_id", "phrase", "annotation_ids", "kind"}`` (and optionally ``"form"``, e.g. ``vgtool
synth``'s ``attributes``/``superlative``/``relation``), states each phrase explicitly, including
phrases that name nothing (empty ``annotation_ids``); datumaro drops it, so its exports hold boxes only.

Layouts: a JSON file; a folder with ``<split>.json``, ``annotations.json`` or one ``.json``; or
datumaro's (CVAT's) COCO layout ``<root>/annotations/instances_<subset>.json`` with the images in
``<root>/images/<subset>/``, the subset being the split. A box with a ``rotation`` attribute other
than 0 is refused: only upright boxes are read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError

DEFAULT_NAME = "annotations.json"
INSTANCES_PREFIX = "instances_"


def datumaro_subset(json_path: Path) -> str | None:
    """``<subset>`` of a ``.../annotations/instances_<subset>.json`` file, else ``None``."""
    if json_path.parent.name == "annotations" and json_path.name.startswith(INSTANCES_PREFIX):
        return json_path.stem[len(INSTANCES_PREFIX) :] if json_path.suffix == ".json" else None
    return None


def _datumaro_json(root: Path, split: str | None) -> Path | None:
    """``<root>/annotations/instances_<split>.json`` (the only one when ``split`` is ``None``), or
    ``None`` when ``root`` is not in datumaro's layout."""
    found = sorted((root / "annotations").glob(f"{INSTANCES_PREFIX}*.json"))
    if not found:
        return None
    subsets = ", ".join(str(datumaro_subset(path)) for path in found)
    if split is not None:
        wanted = root / "annotations" / f"{INSTANCES_PREFIX}{split}.json"
        if not wanted.is_file():
            raise InputError(f"{root}: no annotations/{wanted.name} (subsets here: {subsets})")
        return wanted
    if len(found) > 1:
        raise InputError(f"{root}: several subsets in annotations/ ({subsets}); choose one with a split")
    return found[0]


def default_image_root(json_path: Path) -> Path:
    """Where ``file_name`` is relative to by default: ``<root>/images/<subset>`` for datumaro's layout
    (``<root>/<subset>`` when only that exists, as in COCO 2017), else the JSON file's folder."""
    subset = datumaro_subset(json_path)
    if subset is None:
        return json_path.parent
    root = json_path.parent.parent
    images = root / "images" / subset
    return root / subset if not images.is_dir() and (root / subset).is_dir() else images


def resolve_coco_json(path: Path, split: str | None) -> Path:
    """The JSON file to read: ``path`` itself, ``<path>/<split>.json``, the folder's one JSON file,
    or ``<path>/annotations/instances_<split>.json`` when the folder holds no JSON file of its own."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such COCO file or folder")
    if split is not None and (path / f"{split}.json").is_file():
        return path / f"{split}.json"
    candidates = [path / DEFAULT_NAME] if (path / DEFAULT_NAME).is_file() else sorted(path.glob("*.json"))
    if not candidates:
        datumaro = _datumaro_json(path, split)
        if datumaro is not None:
            return datumaro
    if len(candidates) != 1:
        wanted = f"{split}.json or " if split is not None else ""
        raise InputError(
            f"{path}: expected {wanted}{DEFAULT_NAME} or a single .json file in this folder, "
            f"or annotations/{INSTANCES_PREFIX}<subset>.json"
        )
    return candidates[0]


def _read_coco(path: Path) -> dict[str, Any]:
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not JSON: {err.msg} (line {err.lineno})") from None
    if not isinstance(coco, dict):
        raise InputError(f"{path}: not a COCO file: the top level is not an object")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise InputError(f"{path}: not a COCO file: no {key!r} list")
    return coco


def _id_key(value: int | str) -> tuple[int, int, str]:
    """Sort ints numerically and before strings."""
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def _attributes(ann: dict[str, Any]) -> dict[str, Any]:
    attributes = ann.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueError(f"annotation {ann.get('id')!r}: 'attributes' is not an object")
    rotation = attributes.get("rotation") or 0
    if rotation:
        raise ValueError(
            f"annotation {ann.get('id')!r} is rotated by {rotation} degrees; only upright boxes are read"
        )
    return attributes


def annotation_phrase(ann: dict[str, Any]) -> str | None:
    """``attributes.phrase``, else the top-level ``phrase``; ``None`` when neither is a non-empty text."""
    for value in (_attributes(ann).get("phrase"), ann.get("phrase")):
        if value is not None and str(value).strip():
            return str(value)
    return None


def annotation_score(ann: dict[str, Any]) -> float | None:
    """``attributes.score``, else the top-level ``score`` (numbers written as text are read too)."""
    value = _attributes(ann).get("score", ann.get("score"))
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _boxes_xyxy(anns: Sequence[dict[str, Any]]) -> np.ndarray:
    boxes_xywh = np.asarray([ann["bbox"] for ann in anns], dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], axis=1)


class _CocoIndex:
    """Images (after split filtering), annotations and category names of one COCO file."""

    def __init__(self, coco: dict[str, Any], path: Path, image_root: Path, split: str | None) -> None:
        self.path = path
        self.image_root = image_root
        all_images = {image["id"]: image for image in coco["images"]}
        self.images = all_images
        if split is not None and any("split" in image for image in all_images.values()):
            self.images = {key: image for key, image in all_images.items() if image.get("split") == split}
        self.split_filtered = self.images is not all_images
        self.known_image_ids = set(all_images)
        self.anns = {ann["id"]: ann for ann in coco["annotations"]}
        self.category_names = {cat["id"]: str(cat["name"]) for cat in coco.get("categories", [])}

    def check_image(self, image_id: Any, what: str) -> None:
        if image_id not in self.known_image_ids:
            raise InputError(f"{self.path}: {what} refers to image {image_id!r}, which is not in 'images'")

    def category_name(self, ann: dict[str, Any]) -> str:
        try:
            return self.category_names[ann["category_id"]]
        except KeyError:
            raise InputError(
                f"{self.path}: annotation {ann.get('id')} has category {ann.get('category_id')!r}, "
                "which is not in 'categories'"
            ) from None

    def sample(
        self,
        image_id: Any,
        phrase: str,
        anns: list[dict[str, Any]],
        sample_id: int | str | None,
        meta: dict[str, Any] | None = None,
    ) -> GroundingSample:
        """The sample of one phrase in one image, boxed by ``anns``."""
        image = self.images[image_id]
        names = {self.category_name(ann) for ann in anns}
        meta = {"annotation_ids": [ann["id"] for ann in anns], **(meta or {})}
        scores = [annotation_score(ann) for ann in anns]
        if any(score is not None for score in scores):
            meta["scores"] = scores
        try:
            return GroundingSample(
                image_path=self.image_root / str(image["file_name"]),
                phrase=phrase,
                boxes_xyxy=_boxes_xyxy(anns),
                image_id=image_id,
                width=image.get("width"),
                height=image.get("height"),
                category=names.pop() if len(names) == 1 else None,
                sample_id=sample_id,
                meta=meta,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{self.path}: image {image_id!r}, phrase {phrase!r}: {err!r}") from None


def _from_phrase_list(index: _CocoIndex, phrases: list[dict[str, Any]]) -> list[GroundingSample]:
    """One sample per entry of the top-level ``phrases`` list."""
    samples = []
    for entry in phrases:
        index.check_image(entry.get("image_id"), f"phrase {entry.get('id')!r}")
        if entry["image_id"] not in index.images:
            continue  # another split
        missing = [key for key in entry.get("annotation_ids", []) if key not in index.anns]
        if missing:
            raise InputError(f"{index.path}: phrase {entry.get('id')!r} lists unknown annotations {missing}")
        anns = [index.anns[key] for key in entry.get("annotation_ids", [])]
        kept = [ann for ann in anns if not ann.get("iscrowd", 0)]
        kind = entry.get("kind") or ("none" if not kept else "single" if len(kept) == 1 else "multi")
        phrase = str(entry["phrase"])
        meta = {"kind": kind, **({"form": str(entry["form"])} if entry.get("form") else {})}
        samples.append(index.sample(entry["image_id"], phrase, kept, entry.get("id"), meta=meta))
    return sorted(samples, key=lambda s: (_id_key(s.image_id), s.phrase, _id_key(s.sample_id or 0)))


def _from_annotations(index: _CocoIndex) -> list[GroundingSample]:
    """One sample per (image, phrase) group; the phrase is the annotation's (see
    :func:`annotation_phrase`), else its category name."""
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
    for ann in index.anns.values():
        index.check_image(ann.get("image_id"), f"annotation {ann.get('id')!r}")
        if ann["image_id"] not in index.images or ann.get("iscrowd", 0):
            continue
        groups[(ann["image_id"], annotation_phrase(ann) or index.category_name(ann))].append(ann)
    keys = sorted(groups, key=lambda key: (_id_key(key[0]), key[1]))
    return [
        index.sample(image_id, phrase, groups[(image_id, phrase)], number)
        for number, (image_id, phrase) in enumerate(keys, start=1)
    ]


def load_coco_phrases(
    json_path: str | Path,
    split: str | None = None,
    image_root: str | Path | None = None,
) -> list[GroundingSample]:
    """Phrase samples from a COCO-with-phrases file.

    Args:
        json_path: the JSON file, or a folder holding ``<split>.json``, ``annotations.json`` or
            ``annotations/instances_<split>.json`` (see :func:`resolve_coco_json`).
        split: which split; picks ``<split>.json`` or ``instances_<split>.json`` in a folder, and keeps
            only images whose ``split`` field equals it when images carry one.
        image_root: the folder ``file_name`` is relative to; defaults to ``<root>/images/<split>`` for
            datumaro's layout, else the JSON file's folder.

    Returns:
        Samples sorted by image id, then phrase. With a ``phrases`` list: one per entry, ``sample_id``
        the entry's id, ``meta["kind"]`` its kind and ``meta["form"]`` its form, if given. Otherwise:
        one per (image, phrase) group of non-crowd annotations, ``sample_id`` counting from 1.
        ``meta["annotation_ids"]`` lists the boxes' annotations, and ``meta["scores"]`` their scores
        when the file has them.
    """
    path = resolve_coco_json(Path(json_path), split)
    coco = _read_coco(path)
    index = _CocoIndex(
        coco, path, Path(image_root) if image_root is not None else default_image_root(path), split
    )
    chosen_by_name = split in (path.stem, datumaro_subset(path))
    if split is not None and Path(json_path).is_dir() and not chosen_by_name and not index.split_filtered:
        raise InputError(f"{json_path}: no {split}.json here, and the images of {path.name} carry no 'split'")
    try:
        if coco.get("phrases") is not None:
            return _from_phrase_list(index, coco["phrases"])
        return _from_annotations(index)
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not a COCO-with-phrases file: missing or bad field {err}") from None
    except ValueError as err:  # bad or rotated attributes
        raise InputError(f"{path}: {err}") from None
