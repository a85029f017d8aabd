"""The passes ``vgtool bench`` times, each one stage of ``vgtool ground`` or the whole of it.

Every pass is a callable that runs once and returns its seconds per image (its own setup, such as
clearing an output folder, left out), so that :func:`interleave` can take them in turns:

- :class:`EndToEnd`: a real ``vgtool ground`` run over the files into a fresh folder, the grounder
  already loaded.
- :class:`DecodeOnly`: listing, then the prediction loop's own DataLoader (same dataset, workers,
  batch size and prefetch) decoding, EXIF-transposing and resizing every image, with no model.
- :class:`ModelOnly`: the grounder's ``predict`` on input tensors made ahead of time, one pass per
  phrase count.
- :class:`WritingOnly`: the run's sink (journal lines, crops and overlays on the background
  writers) fed the decoded images and groundings of :func:`collect_groundings`, then
  ``annotations.json`` assembled, into a fresh folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from vgtool.data.image_dataset import ImageBatch
from vgtool.data.listing import ImageEntry
from vgtool.ground.pipeline import GroundConfig, RunSummary
from vgtool.grounders.base import EncodedPhrases, Grounder, Measure, no_measure
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.loop import PredictedBatch

K = TypeVar("K", bound=Hashable)
# Decoded images the writing-only pass may hold in memory (bytes of uint8 [H, W, 3] arrays).
WRITING_IMAGES_BUDGET_BYTES = 1 << 30


def interleave(
    passes: dict[K, Callable[[], float]],
    repeats: int,
    after_round: Callable[[int, dict[K, float]], None] | None = None,
) -> dict[K, list[float]]:
    """Run every pass once per round, in turn, for ``repeats`` rounds.

    A slow spell of the machine then touches every pass alike instead of whichever was being timed
    in a block. Returns each pass's seconds per image, one per round; ``after_round`` is called
    with the round's number (from 1) and its figures.
    """
    seconds: dict[K, list[float]] = {key: [] for key in passes}
    for round_number in range(1, repeats + 1):
        this_round: dict[K, float] = {}
        for key, run in passes.items():
            this_round[key] = run()
            seconds[key].append(this_round[key])
        if after_round is not None:
            after_round(round_number, this_round)
    return seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def postprocess_of(grounder: Grounder, config: GroundConfig) -> PostProcessConfig:
    """The postprocessing a ``vgtool ground`` run with ``config`` applies."""
    threshold = grounder.default_threshold if config.threshold is None else config.threshold
    return PostProcessConfig(threshold=threshold, top_k=config.top_k, nms_iou=config.nms_iou)


def count_outputs(out_dir: Path) -> dict[str, int]:
    """Files under a run folder's ``crops`` and ``overlays``."""
    return {
        kind: sum(1 for p in (out_dir / kind).rglob("*") if p.is_file()) for kind in ("crops", "overlays")
    }


class EndToEnd:
    """``vgtool ground`` over ``image_dir`` (listing included) into a fresh folder per pass.

    Attributes:
        best_stages_s: the run's ``timings`` (seconds per stage) of the fastest pass so far.
        written: crops, overlays and annotations the last pass wrote.
    """

    def __init__(
        self, grounder: Grounder, image_dir: Path, phrases: Sequence[str], config: GroundConfig, scratch: Path
    ):
        self.grounder, self.image_dir, self.phrases, self.config = grounder, image_dir, list(phrases), config
        self.scratch = scratch
        self.best_stages_s: dict[str, float] = {}
        self.written: dict[str, int] = {}
        self._best = float("inf")

    def run_once(self) -> tuple[float, RunSummary]:
        """One run into a fresh folder, removed afterwards: its wall seconds and summary."""
        from vgtool.ground.pipeline import ground
        from vgtool.ground.shard import Shard

        out_dir = self.scratch / "end-to-end"
        shutil.rmtree(out_dir, ignore_errors=True)
        _synchronize(self.grounder.device)
        start = time.perf_counter()
        summary = ground(
            [self.image_dir],
            self.phrases,
            out_dir=out_dir,
            model=self.grounder,
            config=self.config,
            shard=Shard(),
        )
        seconds = time.perf_counter() - start
        self.written = {**count_outputs(out_dir), "annotations": summary.annotations}
        shutil.rmtree(out_dir, ignore_errors=True)
        return seconds, summary

    def __call__(self) -> float:
        seconds, summary = self.run_once()
        if seconds < self._best:
            self._best, self.best_stages_s = seconds, dict(summary.timings)
        return seconds / max(1, summary.grounded)


class _NoModel:
    """A grounder that decodes as ``grounder`` does and predicts nothing (no boxes, no model).

    It hands the prediction loop the real image transform and device (so the DataLoader pins
    memory as it would), and returns empty groundings without touching the input tensors."""

    def __init__(self, grounder: Grounder):
        self.family, self.source, self.device = grounder.family, grounder.source, grounder.device
        self.default_threshold = grounder.default_threshold
        self.image_transform = grounder.image_transform
        self._grounder = grounder

    def identity(self) -> dict[str, str]:
        return self._grounder.identity()

    def settings(self) -> dict[str, Any]:
        return self._grounder.settings()

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        return self._grounder.per_image_memory_bytes(num_phrases)

    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        return EncodedPhrases(texts=tuple(phrases), features=None)

    def predict(
        self,
        batch: ImageBatch,
        phrases: EncodedPhrases,
        *,
        postprocess: PostProcessConfig,
        pairs: Sequence[Sequence[int]] | None = None,
        measure: Measure = no_measure,
    ) -> list[Groundings]:
        return [Groundings.empty() for _ in batch.indices]

    def describe(self) -> dict[str, Any]:
        return self._grounder.describe()


class DecodeOnly:
    """List ``image_dir`` as ``vgtool ground`` does, then decode every image through the
    prediction loop with ``config``'s batch size and workers, keeping the decoded images when crops
    or overlays are on (as a run does); no model runs."""

    def __init__(self, grounder: Grounder, image_dir: Path, phrases: Sequence[str], config: GroundConfig):
        self.no_model = _NoModel(grounder)
        self.postprocess = postprocess_of(grounder, config)
        self.image_dir, self.phrases, self.config = image_dir, list(phrases), config

    def __call__(self) -> float:
        from vgtool.data.listing import list_images
        from vgtool.prediction.loop import predict_images

        config = self.config
        start = time.perf_counter()
        entries = list_images(
            [self.image_dir], recursive=config.recursive, extensions=config.extensions or None
        )
        decoded = 0
        for predicted in predict_images(
            self.no_model,
            entries,
            self.phrases,
            postprocess=self.postprocess,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            keep_images=config.crops or config.overlays,
        ):
            decoded += len(predicted.batch.indices)
        _synchronize(self.no_model.device)
        return (time.perf_counter() - start) / max(1, decoded)


class ModelOnly:
    """``grounder.predict`` on ``images`` images (whole batches of ``batch_size``) of input tensors
    made ahead of time from random pixels, at each phrase count; call :meth:`pass_for` for a pass.

    The tensors are the transform of an image of ``size_wh`` (``[B, 3, H, W]`` as the grounder's
    ``image_transform`` makes them; the bench passes the size of the folder's first image, so that
    models whose input follows the image's shape see the input size of the run), with no file
    decoding and no writing."""

    def __init__(
        self,
        grounder: Grounder,
        phrase_lists: dict[int, list[str]],
        batch_size: int,
        images: int,
        postprocess: PostProcessConfig,
        size_wh: tuple[int, int] = (640, 480),
    ):
        self.grounder, self.postprocess = grounder, postprocess
        pixels = torch.stack([grounder.image_transform(Image.new("RGB", size_wh))] * batch_size)
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 255, pixels.shape, generator=generator).to(pixels.dtype)
        self.batch = ImageBatch(
            indices=list(range(batch_size)),
            pixels=pixels,
            sizes_wh=torch.tensor([[float(size_wh[0]), float(size_wh[1])]]).repeat(batch_size, 1),
            images=None,
            failures=[],
        )
        self.batches = max(1, images // batch_size)
        self.encoded = {count: grounder.encode_phrases(texts) for count, texts in phrase_lists.items()}
        for encoded in self.encoded.values():  # warm-up
            grounder.predict(self.batch, encoded, postprocess=postprocess)

    def pass_for(self, count: int) -> Callable[[], float]:
        """A pass at ``count`` phrases: seconds per image."""

        def run() -> float:
            device = self.grounder.device
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(self.batches):
                self.grounder.predict(self.batch, self.encoded[count], postprocess=self.postprocess)
            _synchronize(device)
            return (time.perf_counter() - start) / (self.batches * len(self.batch.indices))

        return run


def collect_groundings(
    grounder: Grounder,
    entries: Sequence[ImageEntry],
    phrases: Sequence[str],
    config: GroundConfig,
    budget_bytes: int = WRITING_IMAGES_BUDGET_BYTES,
) -> list[PredictedBatch]:
    """The groundings and decoded images of the first images of ``entries``, in the batches a
    ``vgtool ground`` run with ``config`` makes; the model input tensors are dropped.

    Collection stops after the batch that brings the decoded images (uint8 ``[H, W, 3]``) past
    ``budget_bytes``, so a folder of large photos cannot fill the memory; the batches then cover a
    prefix of ``entries`` (at least one batch).
    """
    from vgtool.prediction.loop import predict_images

    collected: list[PredictedBatch] = []
    held = 0
    for predicted in predict_images(
        grounder,
        entries,
        phrases,
        postprocess=postprocess_of(grounder, config),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        keep_images=True,
    ):
        batch = replace(predicted.batch, pixels=torch.zeros(0, 3, 0, 0, dtype=torch.uint8))
        collected.append(PredictedBatch(batch=batch, groundings=predicted.groundings))
        held += sum(image.nbytes for image in batch.images or [])
        if held >= budget_bytes:
            break
    return collected


def covered_images(batches: Sequence[PredictedBatch]) -> int:
    """How many of the run's first images ``batches`` hold (decoded or failed)."""
    positions = [i for p in batches for i in (*p.batch.indices, *(i for i, _ in p.batch.failures))]
    return max(positions, default=-1) + 1


class WritingOnly:
    """What a ``vgtool ground`` run writes for ``batches``, into a fresh folder per pass.

    The run is opened as ``vgtool ground`` opens it (output folder, lock; the grounder already
    loaded), its sink records every batch (journal lines, then crops and overlays on the background
    writers, with the threads and queue length ``vgtool ground`` gives them), the writers are
    drained and ``annotations.json`` and ``run.json`` written. No image is decoded and no model runs.

    Attributes:
        written: crops, overlays and annotations the last pass wrote.
    """

    def __init__(
        self,
        grounder: Grounder,
        batches: list[PredictedBatch],
        entries: Sequence[ImageEntry],
        image_dir: Path,
        phrases: Sequence[str],
        config: GroundConfig,
        scratch: Path,
    ):
        self.grounder, self.batches, self.phrases, self.config = grounder, batches, list(phrases), config
        self.images = covered_images(batches)
        self.entries = entries[: self.images]
        self.image_dir, self.scratch = image_dir, scratch
        self.written: dict[str, int] = {}

    def __call__(self) -> float:
        from vgtool.ground.pipeline import finish_run, open_run, open_sink, run_writer
        from vgtool.ground.shard import Shard
        from vgtool.writers.journal import Journal

        out_dir = self.scratch / "writing-only"
        shutil.rmtree(out_dir, ignore_errors=True)
        config = self.config
        start = time.perf_counter()
        run = open_run(
            [self.image_dir],
            self.phrases,
            out_dir=out_dir,
            model=self.grounder,
            config=config,
            entries=self.entries,
            shard=Shard(),
        )
        with run.lock:
            writer = run_writer(run)
            with Journal(run.state.journal_path) as journal, writer:
                sink = open_sink(run, journal, writer)
                for predicted in self.batches:
                    sink(predicted)
            run.summary.grounded = sink.grounded
            run.timer.add("writing_busy", writer.busy_seconds)
            summary = finish_run(run)
        seconds = time.perf_counter() - start
        self.written = {**count_outputs(out_dir), "annotations": summary.annotations}
        shutil.rmtree(out_dir, ignore_errors=True)
        return seconds / max(1, summary.grounded)
