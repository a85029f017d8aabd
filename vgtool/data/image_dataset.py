"""A map-style dataset over image files for inference, safe to run in DataLoader workers.

Decoding, EXIF orientation and resizing happen in ``__getitem__`` (so in worker processes); a file
that cannot be decoded yields a record with its reason instead of raising, so one bad image never
ends a run. :func:`worker_init` makes a worker leave quietly on SIGTERM, and go when the process
that started it dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.listing import ImageEntry, ImageList


@dataclass
class ImageBatch:
    """A collated batch of decoded images (bad ones listed apart).

    Attributes:
        indices: ``[B]`` positions in the run's image list of the decoded images.
        pixels: the grounder's ``image_transform`` of each image, stacked (``[B, 3, H, W]``) when
            they all have one shape, else a list of ``[3, H_i, W_i]`` tensors.
        sizes_wh: ``[B, 2]`` displayed width and height in pixels.
        images: ``B`` uint8 ``[H, W, 3]`` arrays of the displayed images, or None when not kept.
        failures: ``(index, reason)`` for images that could not be decoded.
    """

    indices: list[int]
    pixels: torch.Tensor | list[torch.Tensor]
    sizes_wh: torch.Tensor
    images: list[np.ndarray] | None
    failures: list[tuple[int, str]]

    def pin_memory(self) -> ImageBatch:
        if isinstance(self.pixels, list):
            self.pixels = [p.pin_memory() for p in self.pixels]
        else:
            self.pixels = self.pixels.pin_memory()
        return self


class ImageFileDataset(Dataset):
    """Items are dicts: ``index``, and either ``pixels``/``size_wh``/``image`` or ``error``.

    Args:
        entries: the images; an :class:`~vgtool.data.image_list.ImageList` is kept as it is and
            indexed as items are asked for (a worker receives its buffers, not an object per
            image), any other sequence is copied into a list.
        transform: ``PIL RGB image -> [3, H, W]`` model input tensor (picklable: it runs in workers).
        keep_images: also return the decoded image, for crops and overlays.
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        transform: Callable[[Image.Image], torch.Tensor],
        keep_images: bool,
    ):
        self.entries = entries if isinstance(entries, ImageList) else list(entries)
        self.transform = transform
        self.keep_images = keep_images

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        try:
            image = load_rgb(self.entries[index].path)
        except ImageDecodeError as err:
            return {"index": index, "error": str(err)}
        item = {
            "index": index,
            "pixels": self.transform(image),
            "size_wh": (image.width, image.height),
        }
        if self.keep_images:
            item["image"] = np.asarray(image)
        return item


def collate_images(items: Sequence[dict]) -> ImageBatch:
    """Items of :class:`ImageFileDataset` -> an :class:`ImageBatch` (pixels stacked when they
    share one shape)."""
    good = [it for it in items if "error" not in it]
    pixels: torch.Tensor | list[torch.Tensor]
    if not good:
        pixels = torch.zeros(0, 3, 0, 0, dtype=torch.uint8)
    elif len({tuple(it["pixels"].shape) for it in good}) == 1:
        pixels = torch.stack([it["pixels"] for it in good])
    else:
        pixels = [it["pixels"] for it in good]
    return ImageBatch(
        indices=[it["index"] for it in good],
        pixels=pixels,
        sizes_wh=torch.tensor([it["size_wh"] for it in good], dtype=torch.float32).reshape(-1, 2),
        images=[it["image"] for it in good] if good and "image" in good[0] else None,
        failures=[(it["index"], it["error"]) for it in items if "error" in it],
    )


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(0)


# prctl(2) option: the signal the kernel sends this process when the thread that started it exits.
PR_SET_PDEATHSIG = 1


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SIGTERM ends a worker at once with exit status 0, as torch's
    own handler does when the main process sends it. A SIGTERM sent to the whole process group (by
    a scheduler, systemd or ``kill -TERM -PGID``) is then not reported as a worker failure, and the
    main process decides what it means (``vgtool ground`` stops as on Ctrl-C).

    On Linux the worker also dies with the main process: killed outright (SIGKILL, the out-of-memory
    killer), the main process cannot stop its workers, and they would wait for it forever, holding
    their memory."""
    signal.signal(signal.SIGTERM, _exit_quietly)
    die_with_parent()


def exit_with_parent(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` for the training loaders: :func:`die_with_parent`."""
    die_with_parent()


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing), and
    leave at once if the parent is already gone."""
    parent = multiprocessing.parent_process()
    if not sys.platform.startswith("linux") or parent is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl to call: torch's own watchdog remains
        return
    if os.getppid() != parent.pid:  # the parent died before the signal was set
        os._exit(0)
