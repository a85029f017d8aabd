"""``ground()``: a grounding run over folders of images, resumable, with COCO, crops and overlays.

Three steps: :func:`open_run` (list the images, lock the output folder, load the grounder, open or
resume the output folder), :func:`ground_images` (the shared prediction loop into the journal and
the background writers) and :func:`finish_run` (``annotations.json`` from the journal, and
``run.json``). The grounder is whatever :func:`~vgtool.grounders.load_grounder` makes of ``--model``.

:func:`ground` runs the three while holding the folder's lock (one run per folder, see
:mod:`~vgtool.ground.folder_lock`), with SIGTERM unwinding the run as Ctrl-C does and a full disk or
a lost write permission ending it with one line (see :mod:`~vgtool.ground.stopping`).

Under ``torchrun`` each rank grounds its share of the images into its own journal, and rank 0 alone
finishes the run once all have (see :mod:`~vgtool.ground.shard`); the outputs are those of one
process, byte for byte.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from vgtool import __version__
from vgtool.data.listing import ImageEntry, ImageList, image_root, list_images
from vgtool.errors import InputError
from vgtool.ground.crop_names import name_crops
from vgtool.ground.folder_lock import OutputLock
from vgtool.ground.merge import MergeConfig, phrase_groups
from vgtool.ground.output_dir import RESULTS_NAME, RunState, prepare_output_dir
from vgtool.ground.phrases import Ontology, build_ontology
from vgtool.ground.resume import JournalScan, repair_outputs, scan_journal
from vgtool.ground.shard import Shard, gather, join_group, leave_group, meet, shard_from_env
from vgtool.ground.shared_stems import find_shared_stems
from vgtool.ground.sink import ResultSink, warn
from vgtool.ground.stopping import sigterm_as_interrupt, write_failures_stop_the_run
from vgtool.grounders import Grounder, load_grounder
from vgtool.grounders.base import ModelKey
from vgtool.grounders.registry import model_key
from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.batching import auto_batch_size, auto_workers
from vgtool.prediction.loop import predict_images
from vgtool.prediction.timer import StageTimer
from vgtool.writers.assemble import assemble_annotations
from vgtool.writers.background import BackgroundWriter
from vgtool.writers.coco import categories_to_coco
from vgtool.writers.journal import Journal
from vgtool.writers.manifest import write_manifest
from vgtool.writers.run_folder import JOURNAL_NAME, RUN_KEY_NAME, journal_paths


@dataclass(frozen=True)
class GroundConfig:
    """Settings of a grounding run (everything but the inputs, phrases and model).

    Attributes:
        threshold, top_k, nms_iou: see :class:`PostProcessConfig`; threshold None uses the model's
            default (its calibrated ``meta.postprocess.threshold``; if it has none, 0.5, or 0 for
            a single-box model, whose one box per phrase is then always kept).
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
        compile: ``torch.compile`` the model (worth it on long GPU runs).
        quiet: no progress bar.
        merge: boxes of different phrases that overlap by more than ``merge_iou`` are merged
            (the best-scoring one is kept): ``class`` among phrases filed under one class (a no-op
            when each class has one phrase), ``all`` whatever their class, ``none`` never.
        merge_iou: the IoU above which ``merge`` treats two boxes as one object.
        categories_file: a COCO file or a names list (one per line) whose category ids and names
            the output uses; every phrase's class must be one of them.
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
    merge: Literal["class", "all", "none"] = "class"
    merge_iou: float = 0.5
    categories_file: Path | None = None

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite cannot be used together")
        if self.merge not in ("class", "all", "none"):
            raise InputError(f"--merge: {self.merge!r} is not one of class, all, none")
        if not 0.0 <= self.merge_iou <= 1.0:
            raise InputError(f"--merge-iou: {self.merge_iou} is not between 0 and 1")


@dataclass
class RunSummary:
    """What a run did; also written to ``run.json``."""

    out_dir: Path
    images: int = 0
    grounded: int = 0
    resumed: int = 0
    repaired: int = 0
    annotations: int = 0
    threshold: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class GroundingRun:
    """An opened run: everything :func:`ground_images` and :func:`finish_run` need.

    Attributes:
        entries: the run's images, in image-id order (an image's id is its position + 1).
        todo: ``[T]`` int64, the positions in ``entries`` of this process's images not yet
            journaled, ascending.
        grounder: the loaded model; None when a resumed run found nothing left to do here (the
            model was then never loaded); ``model``: its source, identity and threshold either way.
        shard: this process's place in a sharded run (rank 0 of 1 for one process).
        shard_size: how many of the images are this process's.
        local_ids: journal image-local annotation ids and write pending crops (see
            :mod:`~vgtool.ground.crop_names`): in a sharded run, or in a folder that holds its records.
        merge, merge_groups: how boxes of several phrases on one object are merged, and each
            phrase's group; None when no two phrases share a group.
        batch_size, num_workers: as chosen for this run.
        lock: the output folder's lock, held from :func:`open_run` on; whoever runs the steps
            releases it after :func:`finish_run` (``with run.lock:``), or the process's end does.
    """

    config: GroundConfig
    inputs: list[str]
    entries: ImageList
    grounder: Grounder | None
    model: ModelKey
    postprocess: PostProcessConfig
    merge: MergeConfig | None
    merge_groups: list[int] | None
    state: RunState
    lock: OutputLock
    journal: JournalScan
    todo: np.ndarray
    batch_size: int
    num_workers: int
    timer: StageTimer
    summary: RunSummary
    shard: Shard = field(default_factory=Shard)
    shard_size: int = 0
    local_ids: bool = False
    started: float = field(default_factory=time.time)
    wall_start: float = field(default_factory=time.perf_counter)


def ground(
    inputs: Sequence[str | Path],
    phrases: Sequence[str],
    *,
    out_dir: str | Path,
    model: str | Path | Grounder | None = None,
    phrase_files: Sequence[str | Path] = (),
    config: GroundConfig | None = None,
    progress: Callable[[int], None] | None = None,
    entries: Sequence[ImageEntry] | None = None,
    shard: Shard | None = None,
) -> RunSummary:
    """Ground ``phrases`` in every image under ``inputs`` and write the outputs to ``out_dir``.

    Args:
        inputs: folders, files, globs or image-list files (see :func:`list_images`).
        phrases: ``--phrase`` values; ``"text=class"`` files the boxes under ``class``.
        out_dir: output folder; re-running with the same settings resumes from its journal (and
            re-writes crops/overlays of finished images that an interruption lost).
        model: a model spec for :func:`~vgtool.grounders.load_grounder` (None: the bundled
            default model), or a grounder already loaded (its own device and precision are kept).
        phrase_files: files with one phrase per line.
        config: run settings.
        progress: called with the number of images finished after each batch (for tests/UIs).
        entries: the images, when the caller has already listed ``inputs`` with
            :func:`list_images` (the CLI does, to report a bad path before loading torch).
        shard: this process's rank in a sharded run; None reads it from ``torchrun``'s environment
            (one process when there is none). Each rank grounds its share; rank 0 writes the outputs.

    Returns:
        The run summary (also written to ``out_dir/run.json``); on the other ranks of a sharded
        run, what that rank did.

    Raises:
        InputError, CheckpointError: bad inputs or model, or an output folder that cannot be used
            (see ``GroundConfig.overwrite`` and ``GroundConfig.resume``), before any work is done.
        OutputLocked: another run is writing into ``out_dir`` (an ``InputError``), before the
            model loads.
        OutputWriteError: the disk filled up or write permission was lost mid-run; the journal
            keeps the finished images, and the same call resumes once the cause is fixed.
        KeyboardInterrupt: Ctrl-C, or :class:`~vgtool.errors.Terminated` for SIGTERM (handled only
            while the run lasts, then the caller's handler is back); finished images are kept.
    """
    shard = shard_from_env() if shard is None else shard
    config = config or GroundConfig()
    if shard.sharded:  # one device per rank; one progress bar
        config = dataclasses.replace(
            config, device=shard.device(config.device), quiet=config.quiet or not shard.is_main
        )
    with sigterm_as_interrupt():
        join_group(shard, config.device)
        try:
            run = open_run(
                inputs,
                phrases,
                phrase_files,
                out_dir=out_dir,
                model=model,
                config=config,
                entries=entries,
                shard=shard,
            )
            with run.lock, write_failures_stop_the_run(run.state.out_dir):
                ground_images(run, progress)
                _gather_summaries(run)  # every rank waits here until all are done
                if not shard.is_main:
                    return run.summary
                return finish_run(run)
        finally:
            leave_group(shard)


def _gather_summaries(run: GroundingRun) -> None:
    """On rank 0 of a sharded run, add what the other ranks did to the summary."""
    summary = run.summary
    shares = gather(
        run.shard, (summary.grounded, summary.repaired, summary.skipped[len(run.journal.skipped) :])
    )
    if not run.shard.sharded or not run.shard.is_main:
        return

    def position(skipped: dict[str, str]) -> int:
        found = run.entries.find(skipped["file"])
        return -1 if found is None else found

    summary.grounded = sum(grounded for grounded, _, _ in shares)
    summary.repaired = sum(repaired for _, repaired, _ in shares)
    skipped = [s for _, _, rank_skipped in shares for s in rank_skipped]
    summary.skipped = [*run.journal.skipped, *sorted(skipped, key=position)]


def open_run(
    inputs: Sequence[str | Path],
    phrases: Sequence[str],
    phrase_files: Sequence[str | Path] = (),
    *,
    out_dir: str | Path,
    model: str | Path | Grounder | None = None,
    config: GroundConfig | None = None,
    entries: Sequence[ImageEntry] | None = None,
    shard: Shard | None = None,
) -> GroundingRun:
    """Check the phrases and inputs, lock the output folder, load the grounder, and open (or
    resume) the output folder. The returned run holds the lock; on an error it is released.

    With a sharded ``shard`` (its process group joined), the ranks share the lock, rank 0 prepares
    the output folder while the others wait, and each rank's run holds only its own images."""
    config = config or GroundConfig()
    shard = shard or Shard()
    ontology = build_ontology(phrases, phrase_files, config.categories_file)  # cheap checks first
    if entries is None:  # nothing under out_dir is an input
        entries = list_images(
            inputs,
            recursive=config.recursive,
            extensions=config.extensions or None,
            exclude=[out_dir],
            warn=warn,
        )
    entries = ImageList.from_entries(entries)
    _warn_shared_stems(entries)
    # before anything is written or loaded
    lock = OutputLock(out_dir, shard.run_id, shared=shard.sharded).acquire()
    try:
        return _open_locked(
            inputs, entries, ontology, lock, out_dir=out_dir, model=model, config=config, shard=shard
        )
    except BaseException:
        lock.release()
        raise


def _open_locked(
    inputs: Sequence[str | Path],
    entries: ImageList,
    ontology: Ontology,
    lock: OutputLock,
    *,
    out_dir: str | Path,
    model: str | Path | Grounder | None,
    config: GroundConfig,
    shard: Shard,
) -> GroundingRun:
    """:func:`open_run` once the output folder is locked."""
    from vgtool.device import resolve_device

    started, wall_start = time.time(), time.perf_counter()
    spec = model is None or isinstance(model, str | Path)
    timer = StageTimer(resolve_device(config.device) if spec else model.device)
    timer.add("load_model", 0.0)

    def load() -> Grounder:
        with timer.measure("load_model"):
            return load_grounder(model, device=config.device, bf16=config.bf16, compile_model=config.compile)

    # Resuming, a model named by its files loads only once the journal shows work left (if its
    # family can tell its identity and threshold without it). A new run, or one replacing another
    # (--overwrite), loads it first: a model that fails to load then leaves the folder as it was.
    resuming = spec and not config.overwrite and (Path(out_dir) / RUN_KEY_NAME).is_file()
    key = model_key(model) if resuming else None
    grounder: Grounder | None = model if not spec else (load() if key is None else None)
    key = ModelKey.of(grounder) if key is None else key
    threshold = key.default_threshold if config.threshold is None else config.threshold
    postprocess = PostProcessConfig(threshold=threshold, top_k=config.top_k, nms_iou=config.nms_iou)
    groups = phrase_groups(config.merge, ontology.phrase_categories)
    merge = None if groups is None else MergeConfig(mode=config.merge, iou=config.merge_iou)
    if not shard.is_main:
        meet(shard)  # rank 0 prepares the folder (and may clear it, with --overwrite) first
    state = prepare_output_dir(
        Path(out_dir),
        model_identity=key.identity,
        ontology=ontology,
        postprocess=postprocess,
        merge=merge,
        overwrite=config.overwrite,
        resume=config.resume,
        journal_name=shard.journal_name or JOURNAL_NAME,
        write=shard.is_main,
    )
    if shard.is_main:
        meet(shard)
    journal = scan_journal(
        state, entries, config.crops, config.overlays, owns=shard.owns if shard.sharded else None
    )
    todo = journal.todo(shard)
    if grounder is None and len(todo):
        grounder = load()
    batch_size = config.batch_size or (
        auto_batch_size(grounder.device, grounder.per_image_memory_bytes(len(ontology.phrases)))
        if grounder is not None
        else 1
    )
    workers = auto_workers(len(todo), batch_size) if config.num_workers < 0 else config.num_workers
    summary = RunSummary(
        out_dir=state.out_dir, images=len(entries), resumed=journal.resumed, threshold=threshold
    )
    summary.skipped.extend(journal.skipped)
    summary.repaired = journal.repaired
    return GroundingRun(
        config=config,
        inputs=[str(p) for p in inputs],
        entries=entries,
        grounder=grounder,
        model=key,
        postprocess=postprocess,
        merge=merge,
        merge_groups=groups,
        state=state,
        lock=lock,
        journal=journal,
        todo=todo,
        batch_size=batch_size,
        num_workers=workers,
        timer=timer,
        summary=summary,
        shard=shard,
        shard_size=len(range(shard.rank, len(entries), shard.world_size)),
        local_ids=shard.sharded or journal.local_ids,
        started=started,
        wall_start=wall_start,
    )


def _jsonable(value: object) -> object:
    """A run setting as ``run.json`` stores it."""
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Path) else value


def _warn_shared_stems(entries: ImageList) -> None:
    """Warn once when images of one folder share a stem (a.png, a.jpg): annotations.json keeps
    them apart by file name, and so do vgtool's label exports, but tools that name label files by
    stem (YOLO, VOC) overwrite one with the other."""
    shared = find_shared_stems(entries)
    if shared is not None:
        first, second = shared.first
        more = f" and {shared.pairs - 1} more such pairs" if shared.pairs > 1 else ""
        warn(
            f"{first} and {second} share a name stem{more}; vgtool export-labels keeps them apart, "
            "but tools that name label files by stem would mix them up"
        )


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


def run_writer(run: GroundingRun) -> BackgroundWriter:
    """The background writer for ``run``'s crops and overlays: two threads when images are decoded
    in worker processes (the main process has room), one otherwise."""
    return BackgroundWriter(num_threads=2 if run.num_workers else 1, max_pending=4 * run.batch_size)


def open_sink(run: GroundingRun, journal: Journal, writer: BackgroundWriter) -> ResultSink:
    """The sink that merges, journals and writes ``run``'s results as batches arrive."""
    config = run.config
    return ResultSink(
        journal,
        writer,
        run.state,
        run.entries,
        run.todo,
        first_annotation_id=run.journal.last_annotation_id + 1,
        crops=config.crops,
        overlays=config.overlays,
        strict=config.strict,
        merge=None if run.merge is None else (run.merge_groups, run.merge.iou),
        local_ids=run.local_ids,
    )


def ground_images(run: GroundingRun, progress: Callable[[int], None] | None = None) -> None:
    """Re-write lost crops/overlays, then ground every image not yet done, journaling each batch."""
    from tqdm import tqdm

    config, state = run.config, run.state
    bar = tqdm(
        total=run.shard_size,
        initial=run.shard_size - len(run.todo),
        unit="img",
        disable=config.quiet,
        dynamic_ncols=True,
    )
    writer = run_writer(run)
    try:
        with Journal(state.journal_path) as journal_file, _drained(writer):
            sink = open_sink(run, journal_file, writer)
            for entry, annotations, crops in run.journal.repairs(state, run.entries):
                writer.submit(
                    repair_outputs, entry, annotations, state, config.crops and crops, config.overlays
                )
            for predicted in (
                ()
                if run.grounder is None
                else predict_images(
                    run.grounder,
                    run.entries.take(run.todo),
                    state.ontology.texts,
                    postprocess=run.postprocess,
                    batch_size=run.batch_size,
                    num_workers=run.num_workers,
                    keep_images=config.crops or config.overlays,
                    measure=run.timer.measure,
                    warn=warn,
                )
            ):
                finished = sink(predicted)
                bar.update(finished)
                if progress is not None:
                    progress(finished)
    finally:
        bar.close()
    run.summary.grounded = sink.grounded
    run.summary.skipped.extend(sink.skipped)
    run.timer.add("writing_busy", writer.busy_seconds)


def finish_run(run: GroundingRun) -> RunSummary:
    """Give pending crops their names, assemble ``annotations.json`` from the journals and write
    ``run.json`` (in a sharded run: rank 0, once every rank is done)."""
    state, summary, timer = run.state, run.summary, run.timer
    info = {
        "description": "vgtool grounding results",
        "version": __version__,
        "model": state.run_key["model"],
        "images_listed": len(run.entries),
    }
    journals = journal_paths(state.out_dir)
    if run.local_ids:
        with timer.measure("name_crops"):
            summary.repaired += name_crops(journals, state, run.entries, run.config.crops)
    with timer.measure("assemble"):
        summary.annotations = assemble_annotations(
            journals,
            state.out_dir / "annotations.json",
            info=info,
            categories=categories_to_coco(state.ontology.categories),
            results_path=state.out_dir / RESULTS_NAME,
        )
    summary.timings = {k: round(v, 4) for k, v in timer.totals.items()}
    summary.timings["total"] = round(time.perf_counter() - run.wall_start, 4)
    write_manifest(
        state.out_dir,
        summary,
        model={
            "path": run.model.source,
            "config_hash": state.run_key.get("model_config"),
            "fingerprint": state.run_key["model"],
        },
        image_root=image_root(run.entries),
        arguments={
            "inputs": run.inputs,
            "phrases": [f"{p.text}={p.category}" for p in state.ontology.phrases],
            "config": {k: _jsonable(v) for k, v in vars(run.config).items()},
            "device": str(run.timer.device),
            "batch_size": run.batch_size,
            "num_workers": run.num_workers,
            **(run.grounder.settings() if run.grounder is not None else {"model_loaded": False}),
        },
        started=run.started,
    )
    return summary
