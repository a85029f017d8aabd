"""Write a synthetic referring-expression dataset: PNG images plus one COCO-with-phrases JSON per split.

Layout under ``out_dir``::

    images/<split>/000001.png    the images (ids from 1 within each split)
    <split>.json                 COCO images / categories / annotations, plus "phrases"
    scenes/<split>.jsonl         optional metadata: one line per image with every object's words and box

Everything is a pure function of ``(seed, split, index)``: each image draws from its own
``numpy.random.SeedSequence([seed, split_code, index])``, so any image can be regenerated alone, and
the first ``k`` images of a split do not depend on ``n_images``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vgtool.errors import ConfigError
from vgtool.synth.phrases import DEFAULT_KIND_WEIGHTS, Phrase, Weights, generate_phrases
from vgtool.synth.render import render_scene
from vgtool.synth.scene import Scene, sample_scene
from vgtool.synth.vocabulary import PHRASE_KINDS, SHAPES

DEFAULT_SPLITS: Weights = (("train", 0.8), ("val", 0.1), ("test", 0.1))
CATEGORY_IDS: dict[str, int] = {shape: i for i, shape in enumerate(SHAPES, start=1)}
FORMAT_VERSION = 1
_MIN_IMAGE_SIDE = 64


@dataclass(frozen=True)
class Example:
    """What one generated image shows and says: its scene and its phrases."""

    scene: Scene
    phrases: list[Phrase]


def split_code(split: str) -> int:
    """A stable 32-bit number for a split name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(split.encode("utf-8")).digest()[:4], "little")


def generate_example(
    seed: int,
    split: str,
    index: int,
    image_size: tuple[int, int] = (160, 160),
    phrases_per_image: int = 4,
    kind_weights: Weights = DEFAULT_KIND_WEIGHTS,
) -> tuple[Example, Image.Image]:
    """Generate image ``index`` (0-based) of ``split``; the same arguments always give the same result."""
    scene_seq, render_seq, phrase_seq = np.random.SeedSequence([seed, split_code(split), index]).spawn(3)
    width, height = image_size
    scene = sample_scene(np.random.default_rng(scene_seq), width, height)
    image = render_scene(scene, np.random.default_rng(render_seq))
    phrases = generate_phrases(scene, np.random.default_rng(phrase_seq), phrases_per_image, kind_weights)
    return Example(scene=scene, phrases=phrases), image


def split_sizes(n_images: int, splits: Weights) -> list[tuple[str, int]]:
    """Share ``n_images`` among splits by fraction (largest remainder, ties to the earlier split)."""
    fractions = np.array([f for _, f in splits], dtype=np.float64)
    if (fractions < 0).any() or fractions.sum() <= 0:
        raise ConfigError(f"split fractions must be >= 0 and not all 0, got {splits}")
    exact = n_images * fractions / fractions.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_images - int(counts.sum())]:
        counts[i] += 1
    return [(name, int(c)) for (name, _), c in zip(splits, counts, strict=True)]


def _xywh(bbox_xyxy: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = bbox_xyxy
    return [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)]


def coco_for_split(
    examples: Sequence[Example], split: str, seed: int, file_names: Sequence[str]
) -> dict[str, Any]:
    """The COCO-with-phrases dict for one split: one annotation per (phrase, object) pair, ids from 1."""
    images, annotations, phrases = [], [], []
    for image_id, (example, file_name) in enumerate(zip(examples, file_names, strict=True), start=1):
        scene = example.scene
        images.append({"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height})
        for phrase in example.phrases:
            phrase_id = len(phrases) + 1
            annotation_ids = []
            for index in phrase.object_indices:
                obj = scene.objects[index]
                bbox_xywh = _xywh(obj.bbox_xyxy)
                annotation_ids.append(len(annotations) + 1)
                annotations.append(
                    {
                        "id": annotation_ids[-1],
                        "image_id": image_id,
                        "category_id": CATEGORY_IDS[obj.shape],
                        "bbox": bbox_xywh,
                        "area": round(bbox_xywh[2] * bbox_xywh[3], 2),
                        "iscrowd": 0,
                        "phrase": phrase.text,
                        "phrase_id": phrase_id,
                    }
                )
            phrases.append(
                {
                    "id": phrase_id,
                    "image_id": image_id,
                    "phrase": phrase.text,
                    "annotation_ids": annotation_ids,
                    "kind": phrase.kind,
                    "form": phrase.query.form,
                }
            )
    return {
        "info": {"description": "vgtool synth", "version": FORMAT_VERSION, "seed": seed, "split": split},
        "images": images,
        "categories": [{"id": i, "name": shape} for shape, i in CATEGORY_IDS.items()],
        "annotations": annotations,
        "phrases": phrases,
    }


def _write_example(
    out_dir: Path, file_name: str, seed: int, split: str, index: int, options: dict[str, Any]
) -> Example:
    """Generate one example and save its PNG (runs in a worker process when ``workers > 1``)."""
    example, image = generate_example(seed, split, index, **options)
    image.save(out_dir / file_name, format="PNG", compress_level=6)
    return example


def _dump_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"


def generate_dataset(
    out_dir: str | Path,
    n_images: int,
    seed: int = 0,
    *,
    splits: Weights = DEFAULT_SPLITS,
    split_override: str | None = None,
    image_size: tuple[int, int] = (160, 160),
    phrases_per_image: int = 4,
    kind_weights: Weights = DEFAULT_KIND_WEIGHTS,
    workers: int = 1,
    progress: Callable[[int], object] | None = None,
) -> dict[str, dict[str, int]]:
    """Generate ``n_images`` images with phrases into ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: output folder; created if needed, existing files of the same names are overwritten.
        n_images: total number of images over all splits.
        seed: dataset seed; the same ``(n_images, seed)`` and options give byte-identical files.
        splits: ``(name, fraction)`` pairs; images are shared out by fraction.
        split_override: put all images into this one split instead (e.g. a held-out "test" set made
            with another seed).
        image_size: ``(width, height)`` in pixels.
        phrases_per_image: phrases drawn per image (fewer only if a scene runs out of distinct phrases).
        kind_weights: ``(kind, weight)`` for "single", "multi", "none".
        workers: processes to generate images in; output does not depend on it.
        progress: called with 1 after each image (e.g. ``tqdm.update``).

    Returns:
        Per split: counts of images, annotations, phrases, and phrases of each kind.
    """
    width, height = image_size
    if min(width, height) < _MIN_IMAGE_SIDE:
        raise ConfigError(f"image size must be at least {_MIN_IMAGE_SIDE} px a side, got {width}x{height}")
    if min(n_images, seed) < 0 or min(phrases_per_image, workers) < 1:
        raise ConfigError("n_images and seed must be >= 0, phrases_per_image and workers >= 1")
    if set(k for k, _ in kind_weights) - set(PHRASE_KINDS):
        raise ConfigError(f"phrase kinds must be among {PHRASE_KINDS}, got {kind_weights}")
    sizes = [(split_override, n_images)] if split_override else split_sizes(n_images, splits)
    options = {
        "image_size": (width, height),
        "phrases_per_image": phrases_per_image,
        "kind_weights": kind_weights,
    }
    out = Path(out_dir)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        return {
            split: _write_split(pool, out, split, count, seed, options, progress) for split, count in sizes
        }


def _write_split(
    pool: ProcessPoolExecutor | _Inline,
    out: Path,
    split: str,
    count: int,
    seed: int,
    options: dict[str, Any],
    progress: Callable[[int], object] | None,
) -> dict[str, int]:
    """Generate one split's images, COCO file and scene sidecar; return its counts."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    file_names = [f"images/{split}/{i:06d}.png" for i in range(1, count + 1)]
    args = [out] * count, file_names, [seed] * count, [split] * count, range(count), [options] * count
    examples = []
    for example in pool.map(_write_example, *args, chunksize=8):
        examples.append(example)
        if progress is not None:
            progress(1)
    coco = coco_for_split(examples, split, seed, file_names)
    (out / f"{split}.json").write_text(_dump_json(coco), encoding="utf-8")
    lines = [
        _dump_json({"image_id": i, "file_name": name, **example.scene.to_dict()})
        for i, (example, name) in enumerate(zip(examples, file_names, strict=True), start=1)
    ]
    (out / "scenes" / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    kinds = {kind: sum(p["kind"] == kind for p in coco["phrases"]) for kind in PHRASE_KINDS}
    n_phrases, n_annotations = len(coco["phrases"]), len(coco["annotations"])
    return {"images": count, "annotations": n_annotations, "phrases": n_phrases, **kinds}


class _Inline:
    """A stand-in for ``ProcessPoolExecutor`` that maps in this process."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Example], *iterables: Sequence[Any], chunksize: int = 1) -> Any:
        return map(fn, *iterables)
