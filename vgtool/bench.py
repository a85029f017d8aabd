"""``vgtool bench``: what grounding costs, stage by stage and end to end.

A grounding run has three stages: decoding (DataLoader workers), the model, and writing (journal,
crops and overlays on background threads, ``annotations.json`` at the end). With workers they run
at once, so the pipeline's ideal is its slowest stage's rate, not the rate of the stages one after
another; on a machine with few cores, though, the workers, the writer threads and the model's
threads compete for the same cores (``cpu_count`` says how many this process may use).

Each stage is timed on its own, and the whole run too, in turns (every round times every stage and
every runtime once, so a slow spell of the machine touches all alike); each figure is the best of
``repeats`` rounds. Reports (printed as a table and written as JSON), per runtime under
``runtimes`` and, for the first runtime, also at the top level:

- ``decode_only_images_per_s``: listing the images, then the run's own DataLoader (same dataset,
  batch size, workers and prefetch) decoding, EXIF-transposing and resizing them to the model's
  input, keeping the decoded images as a run with crops or overlays does; no model.
- ``model_only_images_per_s``: the grounder's ``predict`` (backbone, decoder, postprocessing) on
  input tensors made ahead of time (no decoding, no writing), at the run's phrase count.
- ``writing_only_images_per_s``: opening the output folder, the run's sink writing journal lines and
  handing crops and overlays to the background writers (as many threads as ``vgtool ground`` gives
  them), draining them, and assembling ``annotations.json`` and ``run.json``; for the same images and
  the same boxes as the end-to-end run (the groundings and decoded images of an untimed pass over
  the files, held in memory; ``writing_only_images`` of them, which is all unless their decoded
  pixels pass 1 GiB).
- ``end_to_end_images_per_s``: ``vgtool ground`` over the files with crops and overlays on, the
  model already loaded (listing, decoding, model, writing and assembling).
- ``slowest_stage``: which of ``decode_only``, ``model_only`` and ``writing_only`` has the lowest
  rate, and ``end_to_end_vs_slowest`` = end-to-end images/s over that rate: 1 means the pipeline
  adds nothing beyond its slowest stage.
- ``stages_in_series_images_per_s``: the rate if the three stages ran one after another, each as
  fast as alone (``1 / sum(1 / rate)``); end to end below it means running them at once costs more
  than it overlaps.
- ``ratio``: end-to-end over model-only; 1 would mean decoding and writing cost nothing beside the
  model (below ``end_to_end_vs_slowest`` whenever the model is not the slowest stage).
- ``per_round_images_per_s``: each stage's rate in every round (their spread shows the noise).
- ``written``: crops, overlays and annotations of the last end-to-end and writing-only passes
  (the same, unless the writing-only pass covers fewer images).
- ``stages_s``: where the fastest end-to-end run's time went (waiting for decoded images,
  backbone, text, decoder, postprocessing, writing busy on the background threads, assembling).
- ``phrase_scaling_s_per_image``: model-only seconds per image with 1, 4 and 16 phrases.
- ``peak_rss_mib`` (top level): peak resident memory of this process (``main``) and of its largest
  decoding worker (``workers``, sampled every 50 ms: see :mod:`vgtool.rss`), over the models'
  loading, an untimed end-to-end run per runtime and the model-only warm-up, before the
  writing-only pass holds decoded images.
- ``baseline_pipeline`` (with ``baseline="pipeline"``, Hugging Face models): transformers'
  ``zero-shot-object-detection`` pipeline's images/s on the same model, images and phrases, and
  vgtool's speed-up over it (end to end and model-only).
- ``memory_scaling`` (with ``memory_scaling=(200, 2000)``): peak resident memory of separate
  ``vgtool ground`` runs over that many images each (fresh processes, so one run's peak cannot hide
  another's), and the growth from the smallest to the largest run.

Runtimes (``runtimes=("torch",)``): each is loaded by :func:`load_runtime_grounder`; all of them
share the images, phrases, batch size and workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vgtool.errors import InputError
from vgtool.rss import ChildPeakSampler, own_peak_mib

if TYPE_CHECKING:
    from vgtool.bench_stages import EndToEnd, WritingOnly
    from vgtool.grounders.base import Grounder

REPEATS = 5
# A timed pass: (runtime, stage or "end_to_end", phrases per image).
PassKey = tuple[str, str, int]
# The stages of a run, each timed alone; the pipeline's ideal is the slowest one's rate.
STAGES = ("decode_only", "model_only", "writing_only")
PHRASE_POOL = (
    "the red circle",
    "all blue squares",
    "the largest shape",
    "the green star left of the yellow cross",
    "all small triangles",
    "the purple shape",
    "the leftmost circle",
    "all orange shapes",
    "the small cyan cross",
    "the topmost square",
    "the blue triangle below the red star",
    "all large stars",
    "the rightmost shape",
    "the yellow circle",
    "all crosses",
    "the smallest green shape",
)


RUNTIMES = ("torch", "onnx")


def load_runtime_grounder(
    model: str | Path | None, runtime: str, *, device: str = "auto", bf16: bool | None = None
) -> Grounder:
    """The grounder that runs ``model`` on ``runtime``: ``torch`` (:func:`~vgtool.grounders.load_grounder`)
    or ``onnx`` (ONNX Runtime: an exported folder as it is; any other model is exported first, into
    a temporary folder, as ``vgtool export MODEL --onnx`` would, and checked against torch).

    Raises:
        InputError: ``runtime`` is not one of :data:`RUNTIMES`, or the model cannot run on it.
    """
    from vgtool.grounders import load_grounder
    from vgtool.onnx_runtime.folder import is_onnx_spec

    if runtime not in RUNTIMES:
        raise InputError(f"--runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if is_onnx_spec(model):
        if runtime != "onnx":
            raise InputError(f"{model}: an ONNX export runs only with --runtime onnx")
        return load_grounder(model, device=device)
    if runtime == "torch":
        return load_grounder(model, device=device, bf16=bf16)
    import tempfile

    from vgtool.onnx_export.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="vgtool-bench-onnx-") as folder:
        # the sessions hold the graphs in memory once loaded, so the folder can go
        export_onnx(model, Path(folder) / "model", overwrite=True)
        return load_grounder(Path(folder) / "model", device=device)


def bench_phrases(count: int) -> list[str]:
    """``count`` distinct phrases about the synthetic shapes (numbered once the pool runs out)."""
    return [
        PHRASE_POOL[i % len(PHRASE_POOL)] + ("" if i < len(PHRASE_POOL) else f" {i}") for i in range(count)
    ]


def _peak_rss_mib(workers: float | None) -> dict[str, float | None]:
    return {"main": round(own_peak_mib(), 1), "workers": None if workers is None else round(workers, 1)}


def _synthetic_images(folder: Path, count: int) -> Path:
    from vgtool.synth import generate_dataset

    generate_dataset(folder, count, seed=12345, image_size=(320, 320), splits=(("bench", 1.0),))
    return folder / "images" / "bench"


# Runs one grounding job in a fresh interpreter and prints its peak resident memory as JSON.
_RSS_PROBE = """
import json, sys
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.timer import best_of_turns
from vgtool.rss import ChildPeakSampler, own_peak_mib
args = json.loads(sys.argv[1])
with ChildPeakSampler() as workers:
    ground([args["images"]], args["phrases"], out_dir=args["out"], model=args["model"],
           config=GroundConfig(batch_size=args["batch_size"], device=args["device"], bf16=args["bf16"], quiet=True))
print(json.dumps({"main": own_peak_mib(), "workers": workers.peak_mib or 0.0}))
"""


def _memory_scaling(
    counts: tuple[int, ...],
    scratch: Path,
    model_path: str | Path,
    phrases: list[str],
    device: str,
    batch: int,
    bf16,
) -> dict[str, Any]:
    """Peak RSS (MiB) of a separate ground run over each count of images (the first ``n`` of one
    rendered set, so the runs differ only in length)."""
    image_dir = _synthetic_images(scratch / "scaling-data", max(counts))
    files = sorted(p for p in image_dir.iterdir() if p.is_file())
    runs: dict[str, dict[str, float]] = {}
    for count in sorted(counts):
        listing = scratch / f"scaling-{count}.txt"
        listing.write_text("".join(f"{p}\n" for p in files[:count]))
        args = {
            "images": str(listing),
            "phrases": phrases,
            "out": str(scratch / f"scaling-out-{count}"),
            "model": str(model_path),
            "batch_size": batch,
            "device": device,
            "bf16": bf16,
        }
        done = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, json.dumps(args)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory-scaling run over {count} images failed: {done.stderr.strip()[-500:]}")
        peak = json.loads(done.stdout.strip().splitlines()[-1])
        runs[str(count)] = {k: round(v, 1) for k, v in peak.items()}
    small, large = runs[str(min(counts))], runs[str(max(counts))]
    return {
        "peak_rss_mib": runs,
        "growth_main": round(large["main"] / small["main"] - 1, 4),
        "growth_workers": round(large["workers"] / small["workers"] - 1, 4) if small["workers"] else None,
    }


def _pipeline_baseline(
    spec: str | Path, image_paths: list[Path], phrases: list[str], device
) -> dict[str, Any]:
    """images/s of transformers' ``zero-shot-object-detection`` pipeline on the same model (loaded
    from the same folder), images and phrases: one call per image, after one warm-up call."""
    from vgtool.data.decode import load_rgb
    from vgtool.grounders.hf import resolve_hf_spec
    from vgtool.models.hub import quiet_transformers
    from vgtool.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    quiet_transformers()
    from transformers import pipeline

    detector = pipeline("zero-shot-object-detection", model=str(resolve_hf_spec(spec).folder), device=device)
    detector(load_rgb(image_paths[0]), candidate_labels=phrases)  # warm-up
    start = time.perf_counter()
    for path in image_paths:
        detector(load_rgb(path), candidate_labels=phrases)
    seconds = time.perf_counter() - start
    return {"images": len(image_paths), "images_per_s": round(len(image_paths) / seconds, 3)}


def _first_image_size(entries: Sequence[Any]) -> tuple[int, int]:
    """``(width, height)`` as displayed of the first of ``entries`` that decodes (640 x 480 when
    none of the first ten does): the model-only pass's input size."""
    from vgtool.data.decode import ImageDecodeError, load_rgb

    for entry in entries[:10]:
        try:
            return load_rgb(entry.path).size
        except ImageDecodeError:
            continue
    return (640, 480)


def _rates(seconds: Sequence[float]) -> list[float]:
    return [round(1.0 / s, 3) for s in seconds]


def _runtime_report(
    grounder: Grounder,
    seconds: dict[str, list[float]],
    model_only: dict[int, list[float]],
    end_to_end: EndToEnd,
    writing: WritingOnly,
) -> dict[str, Any]:
    """One runtime's figures from its passes' seconds per image, one per round (``seconds``: per
    stage and ``end_to_end``; ``model_only``: per phrase count)."""
    best = {name: min(values) for name, values in seconds.items()}
    rate = {name: 1.0 / value for name, value in best.items()}
    slowest = min(STAGES, key=lambda name: rate[name])
    scaling = {str(k): round(min(model_only[k]), 5) for k in (1, 4, 16)}
    return {
        "model": str(grounder.source),
        **{f"{name}_images_per_s": round(rate[name], 3) for name in (*STAGES, "end_to_end")},
        "slowest_stage": slowest,
        "end_to_end_vs_slowest": round(rate["end_to_end"] / rate[slowest], 3),
        "stages_in_series_images_per_s": round(1.0 / sum(best[name] for name in STAGES), 3),
        "ratio": round(rate["end_to_end"] / rate["model_only"], 3),
        "per_round_images_per_s": {name: _rates(seconds[name]) for name in (*STAGES, "end_to_end")},
        "writing_only_images": writing.images,
        "written": {"end_to_end": end_to_end.written, "writing_only": writing.written},
        "stages_s": end_to_end.best_stages_s,
        "phrase_scaling_s_per_image": scaling,
        "phrase_scaling_16_over_1": round(scaling["16"] / scaling["1"], 3),
    }


def bench(
    *,
    model: str | Path | None = None,
    images: str | Path | None = None,
    synthetic: int = 200,
    phrases: int = 4,
    device: str = "auto",
    batch_size: int = 0,
    bf16: bool | None = None,
    out_json: str | Path | None = None,
    memory_scaling: tuple[int, ...] = (),
    baseline: str | None = None,
    top_k: int = 0,
    repeats: int = REPEATS,
    runtimes: tuple[str, ...] = ("torch",),
    quiet: bool = False,
) -> dict[str, Any]:
    """Time each stage of grounding alone and the whole run, in turns; see the module docstring.

    Args:
        model: a model spec as ``vgtool ground --model`` takes it (None: the bundled model).
        images: a folder of real images; None renders ``synthetic`` procedural images first.
        phrases: phrases per image for every pass (and the model-only figure's phrase count).
        batch_size: images per batch; 0 picks one the way ``vgtool ground`` does (for the first
            runtime's grounder; every runtime gets the same).
        out_json: also write the report here.
        memory_scaling: also measure peak memory of separate runs over these image counts.
        top_k: keep at most this many boxes per phrase and image (0: all above the model's
            threshold); random-weight models find boxes everywhere, and writing thousands of crops
            is not what a real model's run costs.
        repeats: rounds of passes; each figure is the best round's.
        runtimes: what runs the model (``torch``; see :func:`load_runtime_grounder`); the first
            one's figures are also the report's top-level ones.
        baseline: ``pipeline`` also times transformers' zero-shot-object-detection pipeline on the
            same Hugging Face model, images and phrases, and reports vgtool's speed-up over it.
        quiet: no line per round on stderr.

    Raises:
        InputError: a bad baseline, or a runtime that is not available (before anything is timed).
    """
    from vgtool.bench_stages import (
        DecodeOnly,
        EndToEnd,
        ModelOnly,
        WritingOnly,
        collect_groundings,
        interleave,
        postprocess_of,
    )
    from vgtool.data.listing import list_images
    from vgtool.ground.pipeline import GroundConfig
    from vgtool.grounders.hf import is_hf_spec
    from vgtool.prediction.batching import auto_batch_size, auto_workers

    if baseline not in (None, "pipeline"):
        raise InputError(f"--baseline {baseline!r}: the only baseline is 'pipeline'")
    if baseline == "pipeline" and not is_hf_spec(model):
        raise InputError("--baseline pipeline needs a Hugging Face model (--model hf:<id> or a folder)")
    if not runtimes:
        raise InputError("--runtime: name at least one runtime")
    runtimes = tuple(dict.fromkeys(runtimes))
    grounders = {name: load_runtime_grounder(model, name, device=device, bf16=bf16) for name in runtimes}
    first = grounders[runtimes[0]]
    model_path, torch_device = first.source, first.device
    use_bf16 = bool(first.settings().get("bf16", False))
    batch = batch_size or auto_batch_size(torch_device, first.per_image_memory_bytes(phrases))
    phrase_list = bench_phrases(phrases)
    counts = tuple(dict.fromkeys((phrases, 1, 4, 16)))
    with tempfile.TemporaryDirectory(prefix="vgtool-bench-") as scratch:
        scratch_dir = Path(scratch)
        image_dir = Path(images) if images is not None else _synthetic_images(scratch_dir / "data", synthetic)
        entries = list_images([image_dir], recursive=True)
        num_images = len(entries)
        config = GroundConfig(
            batch_size=batch,
            device=device,
            bf16=use_bf16,
            num_workers=auto_workers(num_images, batch),
            recursive=True,
            quiet=True,
            top_k=top_k,
        )
        sample_images = max(batch, min(num_images, 4 * batch))
        end_to_end: dict[str, EndToEnd] = {}
        model_only: dict[str, ModelOnly] = {}
        with ChildPeakSampler() as workers:
            for name, grounder in grounders.items():
                end_to_end[name] = EndToEnd(grounder, image_dir, phrase_list, config, scratch_dir / name)
                end_to_end[name].run_once()  # warm-up
                model_only[name] = ModelOnly(
                    grounder,
                    {count: bench_phrases(count) for count in counts},
                    batch,
                    sample_images,
                    postprocess_of(grounder, config),
                    size_wh=_first_image_size(entries),
                )
        peak_rss = _peak_rss_mib(workers.peak_mib)
        writing: dict[str, WritingOnly] = {}
        passes: dict[PassKey, Callable[[], float]] = {}
        for name, grounder in grounders.items():
            held = collect_groundings(grounder, entries, phrase_list, config)
            writing[name] = WritingOnly(
                grounder, held, entries, image_dir, phrase_list, config, scratch_dir / name
            )
            passes[(name, "end_to_end", phrases)] = end_to_end[name]
            passes[(name, "decode_only", phrases)] = DecodeOnly(grounder, image_dir, phrase_list, config)
            for count in counts:
                passes[(name, "model_only", count)] = model_only[name].pass_for(count)
            passes[(name, "writing_only", phrases)] = writing[name]
        seconds = interleave(passes, repeats, None if quiet else _round_logger(repeats, phrases))
        reports = {
            name: _runtime_report(
                grounders[name],
                {stage: seconds[(name, stage, phrases)] for stage in (*STAGES, "end_to_end")},
                {count: seconds[(name, "model_only", count)] for count in counts},
                end_to_end[name],
                writing[name],
            )
            for name in runtimes
        }
        passes.clear()
        writing.clear()  # the held images and groundings
        scaling_report = (
            _memory_scaling(memory_scaling, scratch_dir, model_path, phrase_list, device, batch, use_bf16)
            if memory_scaling
            else None
        )
        baseline_report = None
        if baseline == "pipeline":
            files = [e.path for e in entries]
            try:
                baseline_report = _pipeline_baseline(model, files, phrase_list, torch_device)
            except Exception as err:  # the pipeline does not serve every family (OmDet-Turbo)
                baseline_report = {"error": f"{type(err).__name__}: {str(err).strip()[:300]}"}
    report: dict[str, Any] = {
        "model": str(model_path),
        "device": str(torch_device),
        "bf16": use_bf16,
        "batch_size": batch,
        "num_workers": config.num_workers,
        "cpu_count": _cpu_count(),
        "images": num_images,
        "phrases": phrases,
        "repeats": repeats,
        "runtime": runtimes[0],
        **reports[runtimes[0]],
        "peak_rss_mib": peak_rss,
        "runtimes": reports,
    }
    if scaling_report is not None:
        report["memory_scaling"] = scaling_report
    if baseline_report is not None and "error" in baseline_report:
        report["baseline_pipeline"] = baseline_report
    elif baseline_report is not None:
        pipeline_rate = baseline_report["images_per_s"]
        report["baseline_pipeline"] = {
            **baseline_report,
            "end_to_end_speedup": round(report["end_to_end_images_per_s"] / pipeline_rate, 3),
            "model_only_speedup": round(report["model_only_images_per_s"] / pipeline_rate, 3),
        }
    if out_json is not None:
        Path(out_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _cpu_count() -> int:
    """The cores this process may run on (counted as ``auto_workers`` counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _round_logger(repeats: int, phrases: int) -> Callable[[int, dict[PassKey, float]], None]:
    """For :func:`~vgtool.bench_stages.interleave`: one line per round and runtime on stderr, with
    each stage's images/s (model-only at the run's phrase count)."""
    labels = {
        "end_to_end": "end to end",
        "decode_only": "decode",
        "model_only": "model",
        "writing_only": "writing",
    }

    def log(round_number: int, seconds: dict[PassKey, float]) -> None:
        lines: dict[str, list[str]] = {}
        for (name, stage, count), value in seconds.items():
            if count == phrases:
                lines.setdefault(name, []).append(f"{labels[stage]} {1.0 / value:.1f}")
        for name, figures in lines.items():
            print(f"round {round_number}/{repeats} {name}: {', '.join(figures)} images/s", file=sys.stderr)

    return log
