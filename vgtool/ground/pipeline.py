"""``ground()``: list images -> decode in workers -> encode each image once -> decode all phrases
per image together -> postprocess -> journal + background writers -> ``annotations.json``.

The journal line of an image is written before its crops and overlay (those are written on
background threads), so a resumed run first re-writes any that an interruption lost.

Each phrase goes through the text encoder once per run, each image through the vision backbone
once, however many phrases there are.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vgtool.checkpoint import config_hash, load_checkpoint
from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.image_dataset import ImageBatch, ImageFileDataset, collate_images
from vgtool.data.listing import ImageEntry, list_images
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.device import autocast, resolve_device
from vgtool.errors import InputError
from vgtool.ground.output_dir import RunState, prepare_output_dir
from vgtool.ground.phrases import Ontology, build_ontology
from vgtool.models.bundled import resolve_model_path
from vgtool.models.inference import decode_pairs
from vgtool.models.postprocess import PostProcess, PostProcessConfig
from vgtool.writers.assemble import assemble_annotations
from vgtool.writers.background import BackgroundWriter
from vgtool.writers.coco import detections_to_coco_annotations
from vgtool.writers.crops import crop_path, write_crops
from vgtool.writers.journal import Journal, read_journal
from vgtool.writers.manifest import write_manifest
from vgtool.writers.overlays import overlay_path, write_overlay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundConfig:
    """Settings of a grounding run (everything but the inputs, phrases and model).

    Attributes:
        threshold, top_k, nms_iou: see :class:`PostProcessConfig`.
        batch_size: images per model call; 0 picks one for the device.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        num_workers: DataLoader worker processes for decoding; -1 picks a number.
        crops, overlays: write them or not.
        recursive, extensions: how folders are searched.
        bf16: bf16 autocast; None means on for CUDA, off for CPU.
        overwrite: discard an existing, incompatible output folder instead of refusing.
        resume: only continue an earlier run in the output folder; refuse if there is none, or if it
            was made with another model, phrases or postprocessing. Without it, a folder with the
            same settings is resumed too, and an empty one is started.
        strict: stop with an error at the first image that cannot be read.
        quiet: no progress bar.
    """

    threshold: float = 0.5
    top_k: int = 0
    nms_iou: float = 0.7
    batch_size: int = 0
    device: str = "auto"
    num_workers: int = -1
    crops: bool = True
    overlays: bool = True
    recursive: bool = False
    extensions: tuple[str, ...] = ()
    bf16: bool | None = None
    overwrite: bool = False
    resume: bool = False
    strict: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite cannot be used together")


@dataclass
class RunSummary:
    """What a run did; also written to ``run.json``."""

    out_dir: Path
    images: int = 0
    grounded: int = 0
    resumed: int = 0
    repaired: int = 0
    annotations: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def auto_batch_size(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(8, min(128, free // (256 * 2**20))))


def _auto_workers(num_images: int, batch_size: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_images <= batch_size or cores < 2:
        return 0
    return min(4, cores - 1)


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


class _Timer:
    """Accumulates wall time per pipeline stage (synchronising CUDA so GPU work is counted)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


def _write_outputs(
    image_array,
    annotations: list[dict[str, Any]],
    state: RunState,
    file_name: str,
    crops: bool,
    overlays: bool,
) -> None:
    image = Image.fromarray(image_array)
    if crops and annotations:
        write_crops(image, annotations, state.category_names, state.out_dir, file_name)
    if overlays:
        write_overlay(image, annotations, state.out_dir, file_name)


def _outputs_missing(record: dict[str, Any], state: RunState, crops: bool, overlays: bool) -> bool:
    """Whether a journaled image lacks its overlay or any crop (one stat per expected file)."""
    if overlays and not overlay_path(state.out_dir, record["file_name"]).exists():
        return True
    if crops:
        names = state.category_names
        for ann in record["annotations"]:
            path = crop_path(state.out_dir, names[ann["category_id"]], record["file_name"], ann["id"])
            if not path.exists():
                return True
    return False


@dataclass
class _JournalScan:
    """What an earlier run left in the journal, read in one streaming pass.

    Attributes:
        done: file names already journaled (grounded or skipped).
        last_annotation_id: the highest annotation id used so far (0 for a new run).
        skipped: ``{"file", "reason"}`` of images skipped earlier.
        repairs: ``(entry, annotations)`` of grounded images whose crops or overlay are missing;
            only these records are kept in memory.
    """

    done: set[str] = field(default_factory=set)
    last_annotation_id: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    repairs: list[tuple[ImageEntry, list[dict[str, Any]]]] = field(default_factory=list)


def _scan_journal(
    state: RunState, entries: Sequence[ImageEntry], crops: bool, overlays: bool
) -> _JournalScan:
    scan = _JournalScan()
    by_name = {e.file_name: e for e in entries} if crops or overlays else {}
    for rec in read_journal(state.journal_path):
        name = rec["file_name"]
        if name in scan.done:  # the first record of an image wins, as in assembly
            continue
        scan.done.add(name)
        if "skipped" in rec:
            scan.skipped.append({"file": name, "reason": rec["skipped"]})
            continue
        annotations = rec.get("annotations", [])
        scan.last_annotation_id = max([scan.last_annotation_id, *(a["id"] for a in annotations)])
        if name in by_name and _outputs_missing(rec, state, crops, overlays):
            scan.repairs.append((by_name[name], annotations))
    return scan


def _repair_outputs(
    entry: ImageEntry, annotations: list[dict[str, Any]], state: RunState, crops: bool, overlays: bool
) -> None:
    """Re-decode an already grounded image and write its crops and overlay from its journal record."""
    try:
        image = load_rgb(entry.path)
    except ImageDecodeError as err:
        _warn(f"cannot re-write the crops/overlay of {entry.path}: {err}")
        return
    _write_outputs(np.asarray(image), annotations, state, entry.file_name, crops, overlays)


@contextmanager
def _drained(writer: BackgroundWriter) -> Iterator[BackgroundWriter]:
    """Use ``writer``; however the block ends, wait for the writes already queued.

    They belong to images already in the journal, so an interrupted run (Ctrl-C, ``--strict``
    error) leaves their crops and overlays complete; waiting is bounded by the writer's queue.
    An error of the block wins over one of the writer.
    """
    try:
        yield writer
    except BaseException:
        with suppress(Exception):
            writer.close()
        raise
    writer.close()


def ground(
    inputs: Sequence[str | Path],
    phrases: Sequence[str],
    *,
    out_dir: str | Path,
    model: str | Path | None = None,
    phrase_files: Sequence[str | Path] = (),
    config: GroundConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Ground ``phrases`` in every image under ``inputs`` and write the outputs to ``out_dir``.

    Args:
        inputs: folders, files, globs or image-list files (see :func:`list_images`).
        phrases: ``--phrase`` values; ``"text=class"`` files the boxes under ``class``.
        out_dir: output folder; re-running with the same settings resumes from its journal (and
            re-writes crops/overlays of finished images that an interruption lost).
        model: checkpoint folder; None uses the bundled default model.
        phrase_files: files with one phrase per line.
        config: run settings.
        progress: called with the number of images finished after each batch (for tests/UIs).

    Returns:
        The run summary (also written to ``out_dir/run.json``).

    Raises:
        InputError, CheckpointError: bad inputs or model, or an output folder that cannot be used
            (see ``GroundConfig.overwrite`` and ``GroundConfig.resume``), before any work is done.
    """
    config = config or GroundConfig()
    started = time.time()
    wall_start = time.perf_counter()
    ontology: Ontology = build_ontology(phrases, phrase_files)
    entries = list_images(inputs, recursive=config.recursive, extensions=config.extensions or None)
    device = resolve_device(config.device)
    model_path = resolve_model_path(model)
    timer = _Timer(device)
    with timer.measure("load_model"):
        net = load_checkpoint(model_path, device=device)
    model_hash = config_hash(net.config)
    post_config = PostProcessConfig(threshold=config.threshold, top_k=config.top_k, nms_iou=config.nms_iou)
    state = prepare_output_dir(
        Path(out_dir),
        model_path=model_path,
        model_hash=model_hash,
        ontology=ontology,
        postprocess=post_config,
        overwrite=config.overwrite,
        resume=config.resume,
    )
    summary = RunSummary(out_dir=state.out_dir, images=len(entries))
    keep_images = config.crops or config.overlays
    journal = _scan_journal(state, entries, config.crops, config.overlays)
    next_annotation_id = journal.last_annotation_id + 1
    todo = [(i, e) for i, e in enumerate(entries) if e.file_name not in journal.done]
    summary.resumed = len(entries) - len(todo)
    summary.skipped.extend(journal.skipped)

    use_bf16 = device.type == "cuda" if config.bf16 is None else config.bf16
    batch_size = config.batch_size or auto_batch_size(device)
    preprocess = PreprocessConfig.from_model(net)
    tokenizer = PhraseTokenizer.for_model(net)
    phrase_texts = [p.text for p in ontology.phrases]
    for text in tokenizer.truncated(phrase_texts):
        _warn(f"phrase {text[:60]!r}... is longer than {tokenizer.max_length} tokens; truncated")
    postprocess = PostProcess(post_config)
    category_ids = torch.tensor([ontology.category_id(i) for i in range(len(phrase_texts))])

    with torch.inference_mode(), autocast(device, use_bf16), timer.measure("text"):
        tokens = {k: v.to(device) for k, v in tokenizer(phrase_texts).items()}
        text_memory = net.encode_text(tokens["input_ids"], tokens["attention_mask"])

    repairs = journal.repairs
    summary.repaired = len(repairs)
    dataset = ImageFileDataset([e for _, e in todo], preprocess, keep_images=keep_images)
    workers = _auto_workers(len(todo), batch_size) if config.num_workers < 0 else config.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    num_phrases = len(phrase_texts)

    from tqdm import tqdm

    bar = tqdm(
        total=len(entries), initial=summary.resumed, unit="img", disable=config.quiet, dynamic_ncols=True
    )
    writer = BackgroundWriter(num_threads=2 if workers else 1, max_pending=4 * batch_size)
    try:
        with Journal(state.journal_path) as journal, _drained(writer):
            for entry, anns in repairs:
                writer.submit(_repair_outputs, entry, anns, state, config.crops, config.overlays)
            batches = iter(loader)
            while True:
                with timer.measure("wait_for_data"):
                    batch: ImageBatch | None = next(batches, None)
                if batch is None:
                    break
                results: dict[int, list[dict[str, Any]]] = {}
                if batch.indices:
                    with torch.inference_mode(), autocast(device, use_bf16):
                        pixels = normalize(batch.pixels.to(device, non_blocking=True), preprocess)
                        with timer.measure("backbone"):
                            image_memory = net.encode_image(pixels)
                        num_images = len(batch.indices)
                        image_index = torch.arange(num_images, device=device).repeat_interleave(num_phrases)
                        text_index = torch.arange(num_phrases, device=device).repeat(num_images)
                        with timer.measure("decoder"):
                            outputs = decode_pairs(net, image_memory, text_memory, image_index, text_index)
                    with timer.measure("postprocess"):
                        sizes = batch.sizes_wh.repeat_interleave(num_phrases, dim=0)
                        detections = postprocess(outputs, sizes)
                        for b, index in enumerate(batch.indices):
                            anns: list[dict[str, Any]] = []
                            for p in range(num_phrases):
                                boxes_xyxy, scores = detections[b * num_phrases + p]
                                new = detections_to_coco_annotations(
                                    boxes_xyxy.numpy(),
                                    scores.numpy(),
                                    image_id=todo[index][0] + 1,
                                    category_id=int(category_ids[p]),
                                    phrase=phrase_texts[p],
                                    first_id=next_annotation_id,
                                )
                                next_annotation_id += len(new)
                                anns.extend(new)
                            results[index] = anns
                for index, _reason in batch.failures:
                    results[index] = []
                failures = dict(batch.failures)
                for index in sorted(results):
                    image_id, entry = todo[index]
                    if index in failures:
                        if config.strict:
                            raise InputError(f"{entry.path}: {failures[index]}")
                        _warn(f"skipped {entry.path}: {failures[index]}")
                        journal.append(
                            {
                                "image_id": image_id + 1,
                                "file_name": entry.file_name,
                                "skipped": failures[index],
                            }
                        )
                        summary.skipped.append({"file": entry.file_name, "reason": failures[index]})
                        continue
                    b = batch.indices.index(index)
                    width, height = (int(v) for v in batch.sizes_wh[b].tolist())
                    journal.append(
                        {
                            "image_id": image_id + 1,
                            "file_name": entry.file_name,
                            "width": width,
                            "height": height,
                            "annotations": results[index],
                        }
                    )
                    summary.grounded += 1
                    if keep_images:
                        writer.submit(
                            _write_outputs,
                            batch.images[b],
                            results[index],
                            state,
                            entry.file_name,
                            config.crops,
                            config.overlays,
                        )
                journal.flush()
                bar.update(len(results))
                if progress is not None:
                    progress(len(results))
    finally:
        bar.close()
    timer.totals["writing_busy"] = writer.busy_seconds
    with timer.measure("assemble"):
        summary.annotations = assemble_annotations(state, entries_count=len(entries))
    summary.timings = {k: round(v, 4) for k, v in timer.totals.items()}
    summary.timings["total"] = round(time.perf_counter() - wall_start, 4)
    write_manifest(
        state,
        summary,
        model_path=model_path,
        model_hash=model_hash,
        arguments={
            "inputs": [str(p) for p in inputs],
            "phrases": [f"{p.text}={p.category}" for p in ontology.phrases],
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
            "device": str(device),
            "batch_size": batch_size,
            "num_workers": workers,
            "bf16": use_bf16,
        },
        started=started,
    )
    return summary
