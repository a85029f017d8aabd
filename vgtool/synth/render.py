"""Draw a ``Scene`` into an RGB image with realistic nuisance.

Backgrounds are desaturated (flat, gradient, stripes, checker or smooth noise) so the saturated object
colours stay readable. Objects get a slight colour jitter, a brightness ramp and sometimes a dark
outline. The scene is drawn at ``supersample`` times the size and box-filtered down (anti-aliased
edges), then Gaussian pixel noise and sometimes a light blur are added.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vgtool.synth.scene import Scene, SceneObject
from vgtool.synth.shapes import polygon_mask
from vgtool.synth.vocabulary import COLOURS

BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "stripes", "checker", "noise")
_MAX_NOISE_SIGMA = 6.0
_P_BLUR = 0.3
_P_OUTLINE = 0.25
_COLOUR_JITTER = 6.0
_MAX_SHADING = 0.12  # brightness varies by up to +-this across an object


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour (float, 0-255) that no vocabulary colour is close to."""
    hue, sat, val = rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.15), rng.uniform(0.15, 0.8)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0


def _shifted(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A second background colour: ``colour`` made lighter or darker by a visible step."""
    step = rng.uniform(25.0, 60.0) * (1 if colour.mean() < 128 else -1)
    return np.clip(colour + step + rng.normal(0.0, 8.0, 3), 0.0, 255.0)


def _background(rng: np.random.Generator, width: int, height: int, scale: int) -> np.ndarray:
    """``[height, width, 3]`` float32 background, 0-255; ``scale`` is the supersampling factor."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    first = _muted_colour(rng)
    second = _shifted(rng, first)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0.0, np.pi)
    along = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "flat":
        t = np.zeros_like(xx)
    elif kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "stripes":
        period = rng.uniform(6.0, 24.0) * scale
        t = (np.floor(along / period) % 2).astype(np.float32)
    elif kind == "checker":
        period = float(rng.integers(8, 25)) * scale
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:  # smooth noise: a coarse random grid, upsampled bicubically
        cells = int(rng.integers(3, 9))
        grid = rng.uniform(0.0, 255.0, (cells, cells)).astype(np.uint8)
        smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
        t = np.asarray(smooth, dtype=np.float32) / 255.0
    return first.astype(np.float32) + (second - first).astype(np.float32) * t[..., None]


def _draw_object(image: Image.Image, obj: SceneObject, rng: np.random.Generator, scale: int) -> None:
    """Paint one object onto the supersampled ``image`` in place."""
    width, height = image.size
    mask = polygon_mask(obj.polygon(), width // scale, height // scale, scale)
    x0, y0, x1, y1 = (np.asarray(obj.bbox_xyxy) * scale).tolist()
    left, top = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    right, bottom = min(int(np.ceil(x1)) + 1, width), min(int(np.ceil(y1)) + 1, height)
    base = np.asarray(COLOURS[obj.colour], dtype=np.float32) + rng.normal(0.0, _COLOUR_JITTER, 3)
    phi, amount = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.0, _MAX_SHADING)
    yy, xx = np.mgrid[0 : bottom - top, 0 : right - left].astype(np.float32)
    ramp = (xx * np.cos(phi) + yy * np.sin(phi)) / max(right - left, bottom - top, 1)
    shade = 1.0 + amount * (2.0 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6) - 1.0)
    layer = np.clip(base * shade[..., None], 0.0, 255.0).astype(np.uint8)
    image.paste(Image.fromarray(layer), (left, top), mask.crop((left, top, right, bottom)))
    if rng.random() < _P_OUTLINE:
        outline = tuple(int(c) for c in np.clip(base * 0.55, 0, 255))
        points = [(float(x) * scale - 0.5, float(y) * scale - 0.5) for x, y in obj.polygon()]
        ImageDraw.Draw(image).polygon(points, outline=outline, width=scale)


def render_scene(scene: Scene, rng: np.random.Generator, supersample: int = 2) -> Image.Image:
    """Draw ``scene`` as an RGB image of the scene's size; all randomness comes from ``rng``."""
    width, height = scene.width * supersample, scene.height * supersample
    background = _background(rng, width, height, supersample)
    image = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(np.uint8), "RGB")
    for obj in scene.objects:
        _draw_object(image, obj, rng, supersample)
    if supersample > 1:
        image = image.reduce(supersample)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, _MAX_NOISE_SIGMA), pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    if rng.random() < _P_BLUR:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.9)))
    return image
