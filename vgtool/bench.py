"""``vgtool bench``: what grounding costs, model alone versus the whole pipeline.

Reports (printed and written as JSON):

- ``model_only_images_per_s``: the grounder's ``predict`` (backbone, decoder, postprocessing) on
  tensors made ahead of time (no decoding, no writing), at the run's phrase count.
- ``end_to_end_images_per_s``: ``vgtool ground`` over real files with crops and overlays on
  (model loading excluded), and ``ratio`` = end-to-end / model-only.
- ``stages_s``: where the end-to-end time went (waiting for decoded images, backbone, text,
  decoder, postprocessing, writing on the background threads, assembling annotations.json).
- ``phrase_scaling``: model-only seconds per image with 1, 4 and 16 phrases (timed in turn, best repeat each).
- ``peak_rss_mib``: peak resident memory of this process (``main``) and of its largest decoding
  worker during the end-to-end run (``workers``, sampled every 50 ms: see :mod:`vgtool.rss`).
- ``baseline_pipeline`` (with ``baseline="pipeline"``, Hugging Face models): transformers'
  ``zero-shot-object-detection`` pipeline's images/s on the same model, images and phrases, and
  vgtool's speed-up over it (end to end and model-only).
- ``memory_scaling`` (with ``memory_scaling=(200, 2000)``): peak resident memory of separate
  ``vgtool ground`` runs over that many images each (fresh processes, so one run's peak cannot hide
  another's), and the growth from the smallest to the largest run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.timer import best_of_turns
from vgtool.rss import ChildPeakSampler, own_peak_mib

REPEATS = 5
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


def _peak_rss_mib(workers: float | None) -> dict[str, float | None]:
    return {"main": round(own_peak_mib(), 1), "workers": None if workers is None else round(workers, 1)}


def _model_only(
    grounder,
    num_images: int,
    phrase_counts: tuple[int, ...],
    batch_size: int,
    postprocess: PostProcessConfig,
    repeats: int = REPEATS,
) -> dict[int, float]:
    """Seconds per image of ``grounder.predict`` (backbone, decoder, postprocessing) on batches of
    ready input tensors, per phrase count (timed in turns: :func:`best_of_turns`)."""
    import torch

    from vgtool.data.image_dataset import ImageBatch

    image = Image.new("RGB", (640, 480))
    pixels = torch.stack([grounder.image_transform(image)] * batch_size)
    torch.manual_seed(0)
    pixels = torch.randint_like(pixels, 0, 255)
    batch = ImageBatch(
        indices=list(range(batch_size)),
        pixels=pixels,
        sizes_wh=torch.tensor([[640.0, 480.0]]).repeat(batch_size, 1),
        images=None,
        failures=[],
    )
    batches = max(1, num_images // batch_size)
    runs = {}
    for count in phrase_counts:
        phrases = [
            PHRASE_POOL[i % len(PHRASE_POOL)] + ("" if i < len(PHRASE_POOL) else f" {i}")
            for i in range(count)
        ]
        encoded = grounder.encode_phrases(phrases)
        grounder.predict(batch, encoded, postprocess=postprocess)  # warm-up

        def run(encoded=encoded) -> None:
            for _ in range(batches):
                grounder.predict(batch, encoded, postprocess=postprocess)

        runs[count] = run
    best = best_of_turns(runs, repeats, grounder.device)
    return {count: seconds / (batches * batch_size) for count, seconds in best.items()}


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
    quiet: bool = False,
) -> dict[str, Any]:
    """Measure model-only and end-to-end grounding throughput; see the module docstring.

    Args:
        model: a model spec as ``vgtool ground --model`` takes it (None: the bundled model).
        images: a folder of real images; None renders ``synthetic`` procedural images first.
        phrases: phrases per image for the end-to-end run and the model-only figure.
        batch_size: images per batch; 0 picks one the way ``vgtool ground`` does.
        out_json: also write the report here.
        memory_scaling: also measure peak memory of separate runs over these image counts.
        top_k: keep at most this many boxes per phrase and image (0: all above the model's
            threshold); random-weight models find boxes everywhere, and writing thousands of crops
            is not what a real model's run costs.
        repeats: model-only timings keep the best of this many repeats.
        baseline: ``pipeline`` also times transformers' zero-shot-object-detection pipeline on the
            same Hugging Face model, images and phrases, and reports vgtool's speed-up over it.
    """
    from vgtool.data.listing import list_images
    from vgtool.errors import InputError
    from vgtool.ground.pipeline import GroundConfig, ground
    from vgtool.grounders import load_grounder
    from vgtool.grounders.hf import is_hf_spec
    from vgtool.prediction.batching import auto_batch_size

    if baseline not in (None, "pipeline"):
        raise InputError(f"--baseline {baseline!r}: the only baseline is 'pipeline'")
    if baseline == "pipeline" and not is_hf_spec(model):
        raise InputError("--baseline pipeline needs a Hugging Face model (--model hf:<id> or a folder)")
    grounder = load_grounder(model, device=device, bf16=bf16)  # as vgtool ground loads it
    model_path, torch_device = grounder.source, grounder.device
    use_bf16 = bool(grounder.settings().get("bf16", False))
    batch = batch_size or auto_batch_size(torch_device, grounder.per_image_memory_bytes(phrases))
    with tempfile.TemporaryDirectory(prefix="vgtool-bench-") as scratch:
        scratch_dir = Path(scratch)
        image_dir = Path(images) if images is not None else _synthetic_images(scratch_dir / "data", synthetic)
        num_images = len(list_images([image_dir], recursive=True))
        phrase_list = [PHRASE_POOL[i % len(PHRASE_POOL)] for i in range(phrases)]
        config = GroundConfig(
            batch_size=batch, device=device, bf16=use_bf16, recursive=True, quiet=quiet, top_k=top_k
        )
        with ChildPeakSampler() as workers:
            summary = ground(
                [image_dir], phrase_list, out_dir=scratch_dir / "out", model=grounder, config=config
            )
        timings = dict(summary.timings)
        end_to_end_s = timings["total"] - timings.get("load_model", 0.0)

        sample_images = max(batch, min(num_images, 4 * batch))
        counts = tuple(dict.fromkeys((phrases, 1, 4, 16)))
        selection = PostProcessConfig(threshold=grounder.default_threshold, top_k=top_k)
        per_image = _model_only(grounder, sample_images, counts, batch, selection, repeats)
        model_s = per_image[phrases]
        scaling = {str(k): round(per_image[k], 5) for k in (1, 4, 16)}
        scaling_report = (
            _memory_scaling(memory_scaling, scratch_dir, model_path, phrase_list, device, batch, use_bf16)
            if memory_scaling
            else None
        )
        baseline_report = None
        if baseline == "pipeline":
            files = [e.path for e in list_images([image_dir], recursive=True)]
            try:
                baseline_report = _pipeline_baseline(model, files, phrase_list, torch_device)
            except Exception as err:  # the pipeline does not serve every family (OmDet-Turbo)
                baseline_report = {"error": f"{type(err).__name__}: {str(err).strip()[:300]}"}
    report = {
        "model": str(model_path),
        "device": str(torch_device),
        "bf16": use_bf16,
        "batch_size": batch,
        "images": num_images,
        "phrases": phrases,
        "model_only_images_per_s": round(1.0 / model_s, 3),
        "end_to_end_images_per_s": round(num_images / end_to_end_s, 3),
        "ratio": round((num_images / end_to_end_s) * model_s, 3),
        "stages_s": timings,
        "phrase_scaling_s_per_image": scaling,
        "phrase_scaling_16_over_1": round(scaling["16"] / scaling["1"], 3),
        "peak_rss_mib": _peak_rss_mib(workers.peak_mib),
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
