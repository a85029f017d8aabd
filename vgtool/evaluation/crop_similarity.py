"""Crop similarity: how alike the predicted and the true object look, by a CLIP-family image model.

For each sample (one phrase in one image) with exactly one ground-truth box, the top-1 predicted
box and the true box are cropped from the displayed (EXIF-applied) image, both crops are embedded
with the model's image tower (``get_image_features`` on its own image processor's output) and the
score is the cosine similarity of the two embeddings. A box far off target can still score high
when it holds another object of the same kind, which IoU cannot tell from a miss.

- No predicted box, or a top box with no pixel inside the image (its window, edges rounded to
  pixel boundaries as :func:`~vgtool.writers.crops.crop_box_xyxy` rounds them, is empty): 0, as
  top-1 IoU counts a missing prediction. Any other box, however small, is cropped (at least one
  pixel) and embedded.
- Samples with no true box, several true boxes, or a true box with no pixel inside the image are
  not scored (NaN).
- A crop more than :data:`MAX_ASPECT` times longer than wide (or the reverse) is trimmed to its
  central part of that shape first, so a sliver box cannot blow up the processor's resize.

The model is a Hugging Face model (``hf:<hub id>[@revision]``, or a ``save_pretrained`` folder)
resolved as the grounders resolve theirs (:mod:`vgtool.grounders.hf`): the cache first, and one
quick line when it is not cached and cannot be downloaded. It runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError, ModelSourceError
from vgtool.writers.crops import crop_box_xyxy

if TYPE_CHECKING:
    from vgtool.grounders.hf import HFModelRef

MAX_ASPECT = 4.0
Window = tuple[int, int, int, int]  # left, top, right, bottom: integer pixels, right/bottom exclusive


class CropEmbedder:
    """A CLIP-family model's image tower on one device: PIL crops -> unit-length embeddings.

    Attributes:
        model: the transformers model (``CLIPModel``, ``SiglipModel``, ...), in eval mode.
        image_processor: its image processor, as saved with it.
        ref: where the model came from.
        device: where the model runs.
    """

    def __init__(self, model: Any, image_processor: Any, ref: HFModelRef, device: torch.device):
        self.model = model
        self.image_processor = image_processor
        self.ref = ref
        self.device = device

    @classmethod
    def load(cls, spec: str | Path, *, device: str = "auto") -> CropEmbedder:
        """Load the model that ``spec`` names: ``hf:<hub id>[@revision]``, or a folder saved with
        ``save_pretrained`` (plain or as ``hf:<folder>``) holding the model and its image processor.

        Raises:
            ModelSourceError: one line: not cached and not downloadable (and what to do), not a
                folder, no image processor, or a model without ``get_image_features``.
            InputError: a bad device.
        """
        from vgtool.device import resolve_device
        from vgtool.grounders.hf import HF_PREFIX, load_pretrained, resolve_hf_spec
        from vgtool.torchvision_compat import ensure_torchvision_importable

        text = str(spec)
        if not text.startswith(HF_PREFIX) and not Path(text).expanduser().is_dir():
            raise ModelSourceError(
                f"{text}: no such folder; name a hub model as {HF_PREFIX}org/name "
                f"(e.g. {HF_PREFIX}openai/clip-vit-base-patch32)"
            )
        torch_device = resolve_device(device)
        ref = resolve_hf_spec(text)
        ensure_torchvision_importable()  # before transformers imports its image processing
        import transformers

        model = load_pretrained(transformers.AutoModel, ref, dtype=torch.float32)
        if not callable(getattr(model, "get_image_features", None)):
            raise ModelSourceError(
                f"{text}: {type(model).__name__} has no get_image_features; give a CLIP-family model "
                "(CLIP, SigLIP, ...)"
            )
        image_processor = load_pretrained(transformers.AutoImageProcessor, ref)
        return cls(model.eval().to(torch_device), image_processor, ref, torch_device)

    def identity(self) -> dict[str, str]:
        """What ``metrics.json`` records: the spec as given and the model's identity (the hub id at
        its commit, or a hash of a folder's config and weight files)."""
        return {"spec": self.ref.spec, "model": self.ref.identity()["model"]}

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image], *, batch_size: int = 32) -> torch.Tensor:
        """Embed RGB images (crops).

        Returns:
            ``[N, D]`` float32 on the CPU, each row of unit length.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            pixels = self.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
            output = self.model.get_image_features(pixel_values=pixels.to(self.device, torch.float32))
            # transformers 5 returns a model output whose pooler_output is the embedding; 4 a tensor
            features = output if isinstance(output, torch.Tensor) else output.pooler_output  # [B, D]
            rows.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        if not rows:
            return torch.zeros(0, 0)
        return torch.cat(rows)


def crop_window(box_xyxy: Sequence[float], width: int, height: int) -> Window | None:
    """The pixel window :func:`~vgtool.writers.crops.crop_box_xyxy` crops for a float ``xyxy``
    box, or None when the box has no pixel inside the image (its rounded, clipped window is empty)."""
    x0, y0, x1, y1 = (round(float(v)) for v in box_xyxy)
    if min(x1, width) <= max(x0, 0) or min(y1, height) <= max(y0, 0):
        return None
    return crop_box_xyxy(box_xyxy, width, height)


def trim_aspect(window: Window, max_aspect: float = MAX_ASPECT) -> Window:
    """The central part of ``window`` at most ``max_aspect`` times longer than wide (or the reverse)."""
    left, top, right, bottom = window
    width, height = right - left, bottom - top
    if width > max_aspect * height:
        keep = max(1, int(max_aspect * height))
        left += (width - keep) // 2
        right = left + keep
    elif height > max_aspect * width:
        keep = max(1, int(max_aspect * width))
        top += (height - keep) // 2
        bottom = top + keep
    return left, top, right, bottom


def crop_similarities(
    samples: Sequence[GroundingSample],
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    embedder: CropEmbedder,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Cosine similarity of each sample's top-1 predicted crop and its true crop (see the module
    docstring for what is scored).

    Args:
        samples: the samples; boxes in pixels of the displayed image.
        predictions: per sample, ``(boxes_xyxy [Q, 4], scores [Q])``; the top box is the first of
            the highest score, as for top-1 IoU.
        embedder: the image model.
        batch_size: crops per model call.
        progress: show a progress bar (per image).

    Returns:
        ``[S]`` float64 in sample order; NaN for the samples not scored.

    Raises:
        InputError: an image cannot be decoded (the message names the file).
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    similarities = np.full(len(samples), np.nan)
    samples_of_image: dict[Path, list[int]] = {}
    for i, sample in enumerate(samples):
        if len(sample.boxes_xyxy) == 1:
            samples_of_image.setdefault(sample.image_path, []).append(i)

    # Crops are embedded a batch at a time; each distinct (image, window) once.
    crops: dict[tuple[Path, Window], Image.Image] = {}
    pairs: list[tuple[int, tuple[Path, Window], tuple[Path, Window]]] = []

    def flush() -> None:
        keys = list(crops)
        embeddings = dict(
            zip(keys, embedder.embed([crops[k] for k in keys], batch_size=batch_size), strict=True)
        )
        for i, true_key, pred_key in pairs:
            similarities[i] = float(embeddings[true_key] @ embeddings[pred_key])
        crops.clear()
        pairs.clear()

    from tqdm import tqdm

    for path in tqdm(sorted(samples_of_image), unit="img", disable=not progress, dynamic_ncols=True):
        try:
            image = load_rgb(path)
        except ImageDecodeError as err:
            raise InputError(f"{path}: {err}") from None
        for i in samples_of_image[path]:
            true_window = crop_window(samples[i].boxes_xyxy[0], image.width, image.height)
            if true_window is None:
                continue
            boxes_xyxy, scores = predictions[i]
            scores = np.asarray(scores).reshape(-1)
            top = np.asarray(boxes_xyxy).reshape(-1, 4)[int(scores.argmax())] if len(scores) else None
            pred_window = None if top is None else crop_window(top, image.width, image.height)
            if pred_window is None:
                similarities[i] = 0.0
                continue
            keys = (path, trim_aspect(true_window)), (path, trim_aspect(pred_window))
            for key in keys:
                if key not in crops:
                    crops[key] = image.crop(key[1])
            pairs.append((i, *keys))
        if len(crops) >= batch_size:  # between images: no later image needs these crops
            flush()
    if pairs:
        flush()
    return similarities


def mean_similarity(similarities: np.ndarray) -> tuple[float, int]:
    """``(mean, count)`` of the scored (non-NaN) similarities; the mean is NaN when none is."""
    values = similarities[~np.isnan(similarities)]
    return (float(values.mean()) if len(values) else float("nan")), len(values)
