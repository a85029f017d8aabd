"""What a synthetic image shows: ``Scene`` / ``SceneObject`` and ``sample_scene``, which places them.

Objects are listed in drawing order: ``scene.objects[i].z == i`` and later objects cover earlier ones.
Every object keeps at least ``MIN_VISIBLE_FRACTION`` of its pixels visible; its box is the full drawn
extent, occluded parts included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vgtool.synth.shapes import polygon_area, polygon_bbox_xyxy, polygon_mask, shape_polygon
from vgtool.synth.vocabulary import COLOURS, SHAPES, SIZES, size_word

MIN_VISIBLE_FRACTION = 0.6
MIN_OBJECTS, MAX_OBJECTS = 2, 10
_MAX_ANGLE_DEG = {"circle": 0.0, "square": 15.0, "triangle": 15.0, "star": 36.0, "cross": 15.0}
_P_ALLOW_OCCLUSION = 0.25  # chance that a placement may overlap earlier objects at all
_ATTEMPTS_PER_OBJECT = 40


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape.

    Attributes:
        shape, colour, size: its words in the vocabulary.
        bbox_xyxy: full drawn extent in continuous pixels (pixel i covers [i, i + 1)).
        z: drawing order; higher covers lower.
        centre_xy, extent, angle_deg: the geometry (box centre, longest box side, rotation) that
            ``shapes.shape_polygon`` turns back into the outline.
        shape_area: area of the drawn outline in pixels^2.
        visible_fraction: share of its pixels not covered by later objects.
    """

    shape: str
    colour: str
    size: str
    bbox_xyxy: tuple[float, float, float, float]
    z: int
    centre_xy: tuple[float, float]
    extent: float
    angle_deg: float
    shape_area: float
    visible_fraction: float = 1.0

    def polygon(self) -> np.ndarray:
        """The outline, ``[K, 2]`` (x, y) continuous pixels."""
        return shape_polygon(self.shape, self.centre_xy, self.extent, self.angle_deg)

    @property
    def bbox_area(self) -> float:
        x0, y0, x1, y1 = self.bbox_xyxy
        return (x1 - x0) * (y1 - y0)


@dataclass(frozen=True)
class Scene:
    """An image's size and its objects in drawing order."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the sidecar ``scenes/<split>.jsonl`` format)."""
        return {"width": self.width, "height": self.height, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Inverse of ``to_dict``."""
        objects = []
        for o in data["objects"]:
            fields = dict(o)
            fields["bbox_xyxy"] = tuple(fields["bbox_xyxy"])
            fields["centre_xy"] = tuple(fields["centre_xy"])
            objects.append(SceneObject(**fields))
        return cls(width=int(data["width"]), height=int(data["height"]), objects=tuple(objects))


def make_object(
    shape: str,
    colour: str,
    centre_xy: tuple[float, float],
    extent: float,
    angle_deg: float,
    z: int,
    side: int,
) -> SceneObject:
    """Build a ``SceneObject`` from its geometry, rounding numbers to 0.01 px so JSON round-trips exactly.

    Args:
        side: the shorter image side, which size words are relative to.
    """
    centre_xy = (round(float(centre_xy[0]), 2), round(float(centre_xy[1]), 2))
    extent, angle_deg = round(float(extent), 2), round(float(angle_deg), 2)
    vertices = shape_polygon(shape, centre_xy, extent, angle_deg)
    x0, y0, x1, y1 = (round(v, 2) for v in polygon_bbox_xyxy(vertices))
    return SceneObject(
        shape=shape,
        colour=colour,
        size=size_word(extent / side),
        bbox_xyxy=(x0, y0, x1, y1),
        z=z,
        centre_xy=centre_xy,
        extent=extent,
        angle_deg=angle_deg,
        shape_area=round(polygon_area(vertices), 2),
    )


def _propose(
    rng: np.random.Generator, colours: list[str], shapes: list[str], width: int, height: int, z: int
) -> SceneObject:
    side = min(width, height)
    size = "large" if rng.random() < 0.4 else "small"
    lo, hi = SIZES[size]
    extent = rng.uniform(lo, hi) * side
    shape = str(rng.choice(shapes))
    colour = str(rng.choice(colours))
    max_angle = _MAX_ANGLE_DEG[shape]
    angle = rng.uniform(-max_angle, max_angle)
    # Place the box (whose size depends on the rotation) fully inside the image, one pixel in.
    x0, y0, x1, y1 = polygon_bbox_xyxy(shape_polygon(shape, (0.0, 0.0), extent, angle))
    cx = rng.uniform(1.0 - x0, width - 1.0 - x1)
    cy = rng.uniform(1.0 - y0, height - 1.0 - y1)
    return make_object(shape, colour, (cx, cy), extent, angle, z, side)


def _visible_fractions(masks: list[np.ndarray]) -> list[float]:
    """Share of each mask's pixels not covered by the masks after it."""
    covered = np.zeros_like(masks[0])
    fractions = []
    for mask in reversed(masks):
        total = int(mask.sum())
        fractions.append(float((mask & ~covered).sum()) / max(total, 1))
        covered |= mask
    return fractions[::-1]


def _occlusion_ok(objects: list[SceneObject], masks: list[np.ndarray]) -> bool:
    """Whether every object keeps enough of itself, and its box centre, uncovered by later objects."""
    if min(_visible_fractions(masks)) < MIN_VISIBLE_FRACTION:
        return False
    covered = np.zeros_like(masks[0])
    for obj, mask in zip(reversed(objects), reversed(masks), strict=True):
        cx, cy = (int(v) for v in obj.centre_xy)
        if covered[cy, cx]:
            return False
        covered |= mask
    return True


def sample_scene(rng: np.random.Generator, width: int, height: int, n_objects: int | None = None) -> Scene:
    """Place 2-10 objects (or ``n_objects``) with few colours and shapes, so that words repeat.

    Most objects are placed without any overlap; a few may occlude earlier ones of another colour, as
    long as every object keeps ``MIN_VISIBLE_FRACTION`` of its pixels, and its box centre, visible. When
    the image is too crowded, fewer objects are placed (never fewer than one).
    """
    if n_objects is None:
        n_objects = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    colours = sorted(rng.choice(list(COLOURS), size=int(rng.integers(2, 5)), replace=False).tolist())
    shapes = sorted(rng.choice(list(SHAPES), size=int(rng.integers(2, 5)), replace=False).tolist())
    objects: list[SceneObject] = []
    masks: list[np.ndarray] = []
    union = np.zeros((height, width), dtype=bool)
    for _ in range(n_objects * _ATTEMPTS_PER_OBJECT):
        if len(objects) == n_objects:
            break
        candidate = _propose(rng, colours, shapes, width, height, z=len(objects))
        mask = np.asarray(polygon_mask(candidate.polygon(), width, height)) > 0
        overlap = bool((mask & union).any())
        if overlap and rng.random() >= _P_ALLOW_OCCLUSION:
            continue
        same_colour = [m for o, m in zip(objects, masks, strict=True) if o.colour == candidate.colour]
        if overlap and any((m & mask).any() for m in same_colour):
            continue  # overlapping shapes of one colour would merge into one blob
        if overlap and not _occlusion_ok([*objects, candidate], [*masks, mask]):
            continue
        objects.append(candidate)
        masks.append(mask)
        union |= mask
    fractions = _visible_fractions(masks) if masks else []
    objects = [
        SceneObject(**{**asdict(o), "visible_fraction": round(f, 4)})
        for o, f in zip(objects, fractions, strict=True)
    ]
    return Scene(width=width, height=height, objects=tuple(objects))
