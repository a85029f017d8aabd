"""Read Flickr30k Entities: phrases marked up in captions, boxes per entity in VOC-like XML.

Layout under ``root``: ``Sentences/<id>.txt`` (five captions, one per line, with mentions marked as
``[/EN#18/people A man]``; entity 0 is non-visual), ``Annotations/<id>.xml`` (``<object>`` elements
with one or more ``<name>`` entity ids and a ``<bndbox>`` of **1-based inclusive** pixel corners, or
``<nobndbox>1</nobndbox>`` / ``<scene>1</scene>`` and no box), and ``train.txt`` / ``val.txt`` /
``test.txt`` listing image ids.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError

_MENTION = re.compile(r"\[/EN#(\d+)/(\S+) ([^\[\]]*)\]")


@dataclass(frozen=True)
class Mention:
    """One marked-up phrase of a caption; ``span`` is its character range in the plain caption."""

    entity_id: int
    entity_types: tuple[str, ...]
    phrase: str
    span: tuple[int, int]


def parse_caption(line: str) -> tuple[str, list[Mention]]:
    """Strip the markup from one caption line.

    Returns:
        The plain caption and its mentions in order of appearance.

    Raises:
        ValueError: brackets that are not a well-formed ``[/EN#<id>/<type> <phrase>]`` mention.
    """
    parts: list[str] = []
    mentions: list[Mention] = []
    length, last = 0, 0
    for match in _MENTION.finditer(line):
        before = line[last : match.start()]
        parts += [before, match.group(3)]
        start = length + len(before)
        length = start + len(match.group(3))
        types = tuple(match.group(2).split("/"))
        mentions.append(Mention(int(match.group(1)), types, match.group(3), (start, length)))
        last = match.end()
    parts.append(line[last:])
    caption = "".join(parts)
    if "[" in caption or "]" in caption:
        raise ValueError(f"malformed mention markup in {line!r}")
    return caption, mentions


def parse_annotation(path: Path) -> tuple[int, int, dict[int, list[list[float]]]]:
    """Width, height and the boxes of every boxed entity of one XML file.

    Returns:
        ``(width, height, boxes)`` where ``boxes[entity_id]`` lists ``[x0, y0, x1, y1]`` pixel boxes,
        converted from 1-based inclusive corners to 0-based xyxy (``x0 = xmin - 1``, ``x1 = xmax``).
        Entities that only have ``nobndbox`` or ``scene`` objects are absent.
    """
    try:
        root = ET.parse(path).getroot()
        width = int(root.findtext("size/width", ""))
        height = int(root.findtext("size/height", ""))
        boxes: dict[int, list[list[float]]] = {}
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            xmin, ymin, xmax, ymax = (
                float(box.findtext(key, "")) for key in ("xmin", "ymin", "xmax", "ymax")
            )
            box_xyxy = [xmin - 1, ymin - 1, xmax, ymax]
            if not all(map(math.isfinite, box_xyxy)) or xmax < xmin - 1 or ymax < ymin - 1:
                raise ValueError(f"bad bndbox xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}")
            for name in obj.iter("name"):
                boxes.setdefault(int(name.text or ""), []).append(box_xyxy)
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except (ET.ParseError, ValueError) as err:
        raise InputError(f"{path}: not a Flickr30k Entities annotation: {err}") from None
    return width, height, boxes


def _image_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        ids = [path.stem for path in (root / "Sentences").glob("*.txt")]
    else:
        path = root / f"{split}.txt"
        try:
            ids = path.read_text(encoding="utf-8").split()
        except OSError as err:
            raise InputError(f"{path}: cannot read the {split!r} split list: {err.strerror or err}") from None
    return sorted(set(ids), key=lambda image_id: (len(image_id), image_id))


def _image_samples(root: Path, image_id: str, image_path: Path) -> list[GroundingSample]:
    width, height, boxes = parse_annotation(root / "Annotations" / f"{image_id}.xml")
    sentences_path = root / "Sentences" / f"{image_id}.txt"
    try:
        lines = sentences_path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{sentences_path}: cannot read: {err.strerror or err}") from None
    samples = []
    for caption_index, marked_up in enumerate(line.strip() for line in lines if line.strip()):
        try:
            caption, mentions = parse_caption(marked_up)
        except ValueError as err:
            raise InputError(f"{sentences_path}: caption {caption_index + 1}: {err}") from None
        for mention_index, mention in enumerate(mentions):
            if mention.entity_id == 0 or mention.entity_id not in boxes:
                continue  # non-visual, nobndbox or scene-only: nothing to box
            samples.append(
                GroundingSample(
                    image_path=image_path,
                    phrase=mention.phrase,
                    boxes_xyxy=np.array(boxes[mention.entity_id], dtype=np.float32),
                    image_id=int(image_id) if image_id.isdigit() else image_id,
                    width=width,
                    height=height,
                    category=mention.entity_types[0],
                    sample_id=f"{image_id}_{caption_index}_{mention_index}",
                    meta={
                        "entity_id": mention.entity_id,
                        "entity_types": list(mention.entity_types),
                        "caption": caption,
                        "caption_index": caption_index,
                        "span": mention.span,
                    },
                )
            )
    return samples


def load_flickr30k(
    root: str | Path,
    split: str | None = None,
    image_root: str | Path | None = None,
) -> list[GroundingSample]:
    """One sample per boxed entity mention of Flickr30k Entities.

    Args:
        root: the folder with ``Sentences/``, ``Annotations/`` and the split lists.
        split: ``train``, ``val`` or ``test`` (read from ``<split>.txt``); ``None`` reads every image
            that has a ``Sentences`` file.
        image_root: the folder of ``<id>.jpg`` images; defaults to ``root/flickr30k-images``.

    Returns:
        Samples sorted by image id, then caption and mention order. Each carries every box of its
        entity; ``category`` is the first entity type and ``meta`` holds ``entity_id``,
        ``entity_types``, ``caption``, ``caption_index`` and the phrase's character ``span``.
    """
    root = Path(root)
    if not (root / "Sentences").is_dir() or not (root / "Annotations").is_dir():
        raise InputError(f"{root}: not a Flickr30k Entities folder: needs Sentences/ and Annotations/")
    images = Path(image_root) if image_root is not None else root / "flickr30k-images"
    samples: list[GroundingSample] = []
    for image_id in _image_ids(root, split):
        samples += _image_samples(root, image_id, images / f"{image_id}.jpg")
    return samples
