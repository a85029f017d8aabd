"""Geometry of the synthetic shapes: outline polygons, their boxes, areas and raster masks.

Coordinates are continuous pixels: pixel ``i`` covers ``[i, i + 1)``, so a box ``[0, 0, W, H]`` is the
whole image. Every shape is a polygon (the circle has 64 vertices) so that boxes come exactly from the
drawn outline.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

_CIRCLE_VERTICES = 64
_STAR_INNER_RADIUS = 0.45
_CROSS_HALF_WIDTH = 0.34


def _unit_polygon(shape: str) -> np.ndarray:
    """The shape's outline centred on the origin, y pointing down, about two units across.  # [K, 2]"""
    if shape == "circle":
        t = np.linspace(0.0, 2.0 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "triangle":
        return np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER_RADIUS)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    if shape == "cross":
        a, b = _CROSS_HALF_WIDTH, 1.0
        corners = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a)]
        corners += [(a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        return np.array(corners)
    raise ValueError(f"unknown shape {shape!r}")


def shape_polygon(shape: str, centre_xy: tuple[float, float], extent: float, angle_deg: float) -> np.ndarray:
    """A shape's rotated outline, scaled so its box's longest side is ``extent``, box centred on a point.

    Returns:
        ``[K, 2]`` float64 vertices (x, y) in continuous pixel coordinates.
    """
    unit = _unit_polygon(shape)
    theta = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    points = unit @ rotation.T
    lo, hi = points.min(axis=0), points.max(axis=0)
    points = (points - (lo + hi) / 2) * (extent / float((hi - lo).max()))
    return points + np.asarray(centre_xy, dtype=np.float64)


def polygon_bbox_xyxy(vertices_xy: np.ndarray) -> tuple[float, float, float, float]:
    """Tight box of a polygon, xyxy in the polygon's coordinates."""
    x0, y0 = vertices_xy.min(axis=0)
    x1, y1 = vertices_xy.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def polygon_area(vertices_xy: np.ndarray) -> float:
    """Area enclosed by a simple polygon (shoelace formula)."""
    x, y = vertices_xy[:, 0], vertices_xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def polygon_mask(vertices_xy: np.ndarray, width: int, height: int, scale: int = 1) -> Image.Image:
    """Rasterise a polygon into a ``"L"`` mask (255 inside) of size ``(width * scale, height * scale)``."""
    mask = Image.new("L", (width * scale, height * scale), 0)
    # PIL puts pixel j's centre at integer j; in continuous coordinates that centre is at j + 0.5.
    points = [(float(x) * scale - 0.5, float(y) * scale - 0.5) for x, y in vertices_xy]
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return mask
