"""Read RefCOCO / RefCOCO+ / RefCOCOg in the original ``refer`` layout.

A dataset folder holds ``refs(<split_by>).p`` (a Python 2 pickle: a list of refs, each with
``ref_id, ann_id, image_id, split, category_id, sentences``) and ``instances.json`` (COCO images,
annotations with ``bbox`` xywh in pixels, categories). Images are COCO ``train2014`` files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.datasets.safe_pickle import safe_load
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError

# Used when a folder has several pickles and no split_by was given: the split each dataset's papers
# report (RefCOCO / RefCOCO+: unc; RefCOCOg: umd, else google).
SPLIT_BY_PREFERENCE = ("unc", "umd", "google")


def find_refs_pickle(root: Path, split_by: str | None = None) -> Path:
    """The ``refs(<split_by>).p`` file of a refer dataset folder (or ``root`` itself if it is one)."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise InputError(f"{root}: no such refer dataset folder")
    if split_by is not None:
        path = root / f"refs({split_by}).p"
        if not path.is_file():
            raise InputError(f"{path}: no such refer pickle (split_by={split_by!r})")
        return path
    for name in SPLIT_BY_PREFERENCE:
        if (root / f"refs({name}).p").is_file():
            return root / f"refs({name}).p"
    found = sorted(root.glob("refs(*).p"))
    if not found:
        raise InputError(f"{root}: no refs(unc).p, refs(umd).p or refs(google).p in this folder")
    return found[0]


def _text(value: Any) -> str:
    """A Python 2 string as text: bytes decoded as UTF-8, latin-1 mojibake of UTF-8 repaired."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin1")
    text = str(value)
    try:
        return text.encode("latin1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _load_refs(path: Path) -> list[Mapping[str, Any]]:
    refs = safe_load(path, encoding="latin1")
    if not isinstance(refs, list) or not all(isinstance(ref, Mapping) for ref in refs):
        raise InputError(f"{path}: not a refer pickle: expected a list of dicts, got {type(refs).__name__}")
    required = ("ref_id", "ann_id", "image_id", "split", "sentences")
    for ref in refs:
        missing = [key for key in required if key not in ref]
        if missing:
            raise InputError(f"{path}: not a refer pickle: a ref has no {', '.join(missing)}")
        if not all(isinstance(ref[key], int) for key in ("ref_id", "ann_id", "image_id")):
            raise InputError(f"{path}: not a refer pickle: ref {ref['ref_id']!r} has non-integer ids")
    return refs


def _load_instances(path: Path) -> tuple[dict[int, dict], dict[int, dict], dict[int, str]]:
    """Images, annotations and category names of ``instances.json``, keyed by id."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = {int(image["id"]): image for image in coco["images"]}
        anns = {int(ann["id"]): ann for ann in coco["annotations"]}
        categories = {int(cat["id"]): str(cat["name"]) for cat in coco.get("categories", [])}
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a COCO instances file: {err!r}") from None
    return images, anns, categories


def _ref_samples(
    ref: Mapping[str, Any],
    image: Mapping[str, Any],
    ann: Mapping[str, Any],
    category: str | None,
    image_root: Path,
) -> list[GroundingSample]:
    """One sample per sentence of one ref."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    box_xyxy = np.array([[x, y, x + w, y + h]], dtype=np.float32)
    samples = []
    for sentence in ref["sentences"]:
        raw = _text(sentence.get("raw") or sentence.get("sent", ""))
        samples.append(
            GroundingSample(
                image_path=image_root / str(image["file_name"]),
                phrase=raw,
                boxes_xyxy=box_xyxy,
                image_id=int(ref["image_id"]),
                width=image.get("width"),
                height=image.get("height"),
                category=category,
                sample_id=int(sentence["sent_id"]),
                meta={
                    "ref_id": int(ref["ref_id"]),
                    "ann_id": int(ref["ann_id"]),
                    "split": _text(ref["split"]),
                    "sent": _text(sentence.get("sent", raw)),
                },
            )
        )
    return samples


def load_refer(
    root: str | Path,
    split: str | None,
    image_root: str | Path,
    split_by: str | None = None,
) -> list[GroundingSample]:
    """One sample per referring sentence of a refer-layout dataset.

    Args:
        root: the dataset folder (``.../refcoco``) holding ``refs(*).p`` and ``instances.json``, or
            the pickle itself.
        split: ``train``, ``val``, ``testA``, ``testB`` or ``test``; ``None`` reads every split.
        image_root: the folder of COCO ``train2014`` images.
        split_by: which pickle, ``unc``, ``google`` or ``umd``; by default the only one present, else
            the first of :data:`SPLIT_BY_PREFERENCE`.

    Returns:
        Samples sorted by image id, ref id and sentence order; each has the one box of its ref.
    """
    refs_path = find_refs_pickle(Path(root), split_by)
    instances_path = refs_path.parent / "instances.json"
    refs = _load_refs(refs_path)
    images, anns, categories = _load_instances(instances_path)

    splits = sorted({_text(ref["split"]) for ref in refs})
    if split is not None and split not in splits:
        raise InputError(f"{refs_path}: no refs in split {split!r} (splits here: {', '.join(splits)})")

    samples: list[GroundingSample] = []
    chosen = [ref for ref in refs if split is None or _text(ref["split"]) == split]
    for ref in sorted(chosen, key=lambda ref: (int(ref["image_id"]), int(ref["ref_id"]))):
        ann = anns.get(int(ref["ann_id"]))
        if ann is None:
            raise InputError(f"{instances_path}: no annotation {ref['ann_id']} (ref {ref['ref_id']})")
        image = images.get(int(ref["image_id"]))
        if image is None:
            raise InputError(f"{instances_path}: no image {ref['image_id']} (ref {ref['ref_id']})")
        category_id = ref.get("category_id", ann.get("category_id"))
        category = categories.get(int(category_id)) if category_id is not None else None
        try:
            samples += _ref_samples(ref, image, ann, category, Path(image_root))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{refs_path}: not a refer pickle: ref {ref['ref_id']}: {err!r}") from None
    return samples
