"""``ground()``: list images -> decode in workers -> encode each image once -> decode all phrases
per image together -> postprocess -> journal + background writers -> ``annotations.json``.

The loader is a DataLoader over :class:`ImageFileDataset`, the model step is
:class:`~vgtool.ground.step.GroundingStep` and the sink is :class:`~vgtool.ground.sink.ResultSink`;
this module wires them together and owns resuming (the journal scan) and the run summary.

The journal line of an image is written before its crops and overlay (those are written on
background threads), so a resumed run first re-writes any that an interruption lost.

Each phrase goes through the text encoder once per run, each image through the vision backbone
once, however many phrases there are.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.checkpoint import config_hash, load_checkpoint
from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.image_dataset import ImageBatch, ImageFileDataset, collate_images
from vgtool.data.listing import ImageEntry, list_images
from vgtool.data.preprocess import PreprocessConfig
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.device import autocast, resolve_device
from vgtool.errors import InputError
from vgtool.evaluation.calibrate import model_threshold
from vgtool.ground.output_dir import RunState, prepare_output_dir
from vgtool.ground.phrases import Ontology, build_ontology
from vgtool.ground.sink import ResultSink, warn, write_image_outputs
from vgtool.ground.step import GroundingStep
from vgtool.models.bundled import resolve_model_path
from vgtool.models.inference import prepare_for_inference
from vgtool.models.postprocess import PostProcess, PostProcessConfig
from vgtool.writers.assemble import assemble_annotations
from vgtool.writers.background import BackgroundWriter
from vgtool.writers.crops import crop_path
from vgtool.writers.journal import Journal, read_journal
from vgtool.writers.manifest import write_manifest
from vgtool.writers.overlays import overlay_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundConfig:
    """Settings of a grounding run (everything but the inputs, phrases and model).

    Attributes:
        threshold, top_k, nms_iou: see :class:`PostProcessConfig`; threshold None uses the model's
            calibrated default (``meta.postprocess.threshold``; 0.5 if it has none).
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
        compile: ``torch.compile`` the backbone and decoder (worth it on long GPU runs).
        quiet: no progress bar.
    """

    threshold: float | None = None
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
    compile: bool = False
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


# Batches stop getting faster per image beyond these sizes (CPU: two cores are kept busy by 8-16).
MAX_AUTO_BATCH = {"cpu": 16, "cuda": 128}


def _available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def per_image_memory_bytes(net, num_phrases: int) -> int:
    """A generous estimate of the inference memory one image of a batch needs.

    Input pixels (uint8 and float), the backbone's live activations (about 16 tensors of tokens x
    width, counting attention and MLP intermediates and the autocast copies) and, per phrase, the
    decoder's pair activations (the proposal features over every token and the queries' states).
    """
    vision = net.vision
    side = vision.image_size
    patch = vision.patch_size or 16
    tokens = (side // patch) ** 2 + vision.num_prefix_tokens
    width = vision.embed_dim
    decoder = net.config.decoder
    pixels = 3 * side * side * (1 + 4)
    backbone = 16 * tokens * width * 4
    per_pair = 8 * tokens * decoder.d_model * 4 + 4 * decoder.num_queries * decoder.ffn_dim * 4
    return pixels + backbone + num_phrases * per_pair


def auto_batch_size(device: torch.device, net=None, num_phrases: int = 1) -> int:
    """Images per model call when none is given: the most that fit in a quarter of the memory that
    is free now (estimated by :func:`per_image_memory_bytes`), capped where bigger batches stop
    paying off (16 on CPU, 128 on CUDA), and at least 1."""
    cap = MAX_AUTO_BATCH["cuda" if device.type == "cuda" else "cpu"]
    if net is None:
        return min(8, cap)
    budget = _available_memory_bytes(device) // 4
    return int(max(1, min(cap, budget // per_image_memory_bytes(net, num_phrases))))


def _auto_workers(num_images: int, batch_size: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_images <= batch_size or cores < 2:
        return 0
    return min(4, cores - 1)


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
        warn(f"cannot re-write the crops/overlay of {entry.path}: {err}")
        return
    write_image_outputs(np.asarray(image), annotations, state, entry.file_name, crops, overlays)


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
    threshold = model_threshold(model_path) if config.threshold is None else config.threshold
    post_config = PostProcessConfig(threshold=threshold, top_k=config.top_k, nms_iou=config.nms_iou)
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
    phrase_texts = [p.text for p in ontology.phrases]
    batch_size = config.batch_size or auto_batch_size(device, net, len(phrase_texts))
    channels_last = prepare_for_inference(net, device, compile_model=config.compile)
    preprocess = PreprocessConfig.from_model(net)
    tokenizer = PhraseTokenizer.for_model(net)
    for text in tokenizer.truncated(phrase_texts):
        warn(f"phrase {text[:60]!r}... is longer than {tokenizer.max_length} tokens; truncated")

    with torch.inference_mode(), autocast(device, use_bf16), timer.measure("text"):
        tokens = {k: v.to(device) for k, v in tokenizer(phrase_texts).items()}
        text_memory = net.encode_text(tokens["input_ids"], tokens["attention_mask"])
    step = GroundingStep(
        net=net,
        device=device,
        bf16=use_bf16,
        preprocess=preprocess,
        postprocess=PostProcess(post_config),
        text_memory=text_memory,
        phrase_texts=phrase_texts,
        category_ids=[ontology.category_id(i) for i in range(len(phrase_texts))],
        image_ids=[image_id + 1 for image_id, _ in todo],
        measure=timer.measure,
    )

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

    from tqdm import tqdm

    bar = tqdm(
        total=len(entries), initial=summary.resumed, unit="img", disable=config.quiet, dynamic_ncols=True
    )
    writer = BackgroundWriter(num_threads=2 if workers else 1, max_pending=4 * batch_size)
    try:
        with Journal(state.journal_path) as journal_file, _drained(writer):
            sink = ResultSink(
                journal_file,
                writer,
                state,
                todo,
                crops=config.crops,
                overlays=config.overlays,
                strict=config.strict,
            )
            for entry, anns in repairs:
                writer.submit(_repair_outputs, entry, anns, state, config.crops, config.overlays)
            batches = iter(loader)
            while True:
                with timer.measure("wait_for_data"):
                    batch: ImageBatch | None = next(batches, None)
                if batch is None:
                    break
                results = step(batch, next_annotation_id)
                next_annotation_id += sum(len(anns) for anns in results.values())
                finished = sink(batch, results)
                bar.update(finished)
                if progress is not None:
                    progress(finished)
    finally:
        bar.close()
    summary.grounded = sink.grounded
    summary.skipped.extend(sink.skipped)
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
            "channels_last": channels_last,
        },
        started=started,
    )
    return summary
