"""The seam between vgtool and a family of grounding models: the :class:`Grounder` protocol.

A grounder is loaded once per run (:func:`vgtool.grounders.load_grounder`) and then:

1. says how to turn a decoded image into model input (:attr:`Grounder.image_transform`, run in the
   data-loading workers), how much memory an image costs (for the automatic batch size), which
   threshold it recommends and what identifies it (so that two runs' outputs are comparable);
2. encodes the run's phrases once (:meth:`Grounder.encode_phrases`);
3. grounds batches of images (:meth:`Grounder.predict`), returning one
   :class:`~vgtool.groundings.Groundings` per image, boxes in pixels of the displayed image.

Everything else (listing, decoding, batching, resuming, writing) is the prediction loop's and the
run's, the same for every family. A new family is one module implementing this protocol plus one
line in :data:`vgtool.grounders.registry.FAMILIES`.

A family may also give its :class:`ModelKey` without loading the weights (a classmethod ``key``
taking ``load``'s leading arguments), so that a resumed run with nothing left to do never loads
the model (:func:`vgtool.grounders.registry.model_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from vgtool.data.image_dataset import ImageBatch
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig

# ``measure(stage)`` -> a context manager that adds the block's wall time to that stage's total.
Measure = Callable[[str], AbstractContextManager]


def no_measure(stage: str) -> AbstractContextManager:
    """A :data:`Measure` that records nothing."""
    return nullcontext()


@dataclass(frozen=True)
class EncodedPhrases:
    """Phrases encoded by a grounder, ready for any number of images.

    Attributes:
        texts: the P phrases, in order; a box's ``phrase_id`` indexes them.
        features: the grounder's own encoding (opaque to everyone else).
        warnings: one line per problem worth telling the user (a phrase cut at the model's length).
    """

    texts: tuple[str, ...]
    features: Any
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelKey:
    """What a run records of a model, known before (or without) loading it.

    Attributes:
        source: as :attr:`Grounder.source` names it (a folder, or a hub spec), as text.
        identity: as :meth:`Grounder.identity` gives it once loaded.
        default_threshold: as :attr:`Grounder.default_threshold`.
    """

    source: str
    identity: dict[str, str]
    default_threshold: float

    @classmethod
    def of(cls, grounder: Grounder) -> ModelKey:
        """The key of a loaded grounder."""
        return cls(str(grounder.source), grounder.identity(), grounder.default_threshold)


class Grounder(Protocol):
    """A grounding model, ready to run on one device. See the module docstring."""

    #: the family's registry name (``vlgtr``, ...)
    family: str
    #: where it was loaded from (a checkpoint folder, ...)
    source: Path | str
    device: torch.device
    #: the score threshold the model recommends (a calibrated one where it has it)
    default_threshold: float
    #: picklable ``PIL RGB image -> [3, H, W]`` model input tensor (uint8 to be normalised on the
    #: device, or the float pixels of a Hugging Face image processor); runs in DataLoader workers
    image_transform: Callable[[Image.Image], torch.Tensor]

    def identity(self) -> dict[str, str]:
        """What makes two runs' outputs comparable: ``model`` (a fingerprint of the weights and
        config) and ``model_config`` (a hash of the architecture's settings)."""
        ...

    def settings(self) -> dict[str, Any]:
        """How the model runs (precision, memory layout, ...), for the run manifest."""
        ...

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """A generous estimate of the inference memory one image of a batch needs."""
        ...

    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Encode phrases once, for every batch that follows."""
        ...

    def predict(
        self,
        batch: ImageBatch,
        phrases: EncodedPhrases,
        *,
        postprocess: PostProcessConfig,
        pairs: Sequence[Sequence[int]] | None = None,
        measure: Measure = no_measure,
    ) -> list[Groundings]:
        """Ground phrases in each decoded image of ``batch``.

        Args:
            batch: ``pixels`` from :attr:`image_transform` (``[B, 3, H, W]``, or a list when the
                images' inputs differ in size), ``sizes_wh`` ``[B, 2]`` displayed sizes.
            phrases: from :meth:`encode_phrases`.
            postprocess: threshold, NMS and top-k per (image, phrase).
            pairs: per image, the indices of the phrases to ground in it (ascending); None grounds
                every phrase in every image.
            measure: records stage timings (``backbone``, ``decoder``, ``postprocess``).

        Returns:
            ``B`` groundings, boxes ordered by phrase, then by decreasing score.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """The model for people (``vgtool info``): architecture, parameters, sources."""
        ...
