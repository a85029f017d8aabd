"""Decode an image file into RGB pixels in its displayed orientation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Pillow's own limit (about 89 megapixels) stays in force: larger files are refused, not decoded.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageDecodeError(Exception):
    """An image could not be decoded; ``str()`` is the one-line reason."""


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        span = max(float(array.max() - array.min()), 1e-12)
        array = ((array - array.min()) / span * 255.0).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB image with its EXIF orientation applied.

    Transparent pixels are composited on white; 16-bit images are scaled to 8 bits; for animated
    formats the first frame is used.

    Raises:
        ImageDecodeError: with a one-line reason (empty, truncated, not an image, too large, ...).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Corrupt EXIF data": decoded anyway
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image) or image
                return _to_rgb(image)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"too large to decode safely ({_one_line(err)})") from err
    except PermissionError as err:
        raise ImageDecodeError("permission denied") from err
    except FileNotFoundError as err:
        raise ImageDecodeError("file not found (dangling symlink?)") from err
    except Image.UnidentifiedImageError as err:
        raise ImageDecodeError("not an image, or a format Pillow cannot read") from err
    except OSError as err:
        if err.errno is not None:  # from the file system (a symlink loop, a folder, EIO), not the decoder
            raise ImageDecodeError(f"cannot read file ({err.strerror})") from err
        raise ImageDecodeError(f"corrupt or truncated image ({_one_line(err)})") from err
    except (SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"corrupt or truncated image ({_one_line(err)})") from err
    except Exception as err:  # a plugin tripping over a malformed file must not end the run
        raise ImageDecodeError(f"cannot decode ({type(err).__name__}: {_one_line(err)})") from err
