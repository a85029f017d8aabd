"""Crop similarity: tiny random CLIP and SigLIP models saved as Hugging Face folders, hand-made crops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from vgtool.cli.evaluate import evaluate_cli, metrics_table
from vgtool.datasets import DataConfig
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import ModelSourceError
from vgtool.evaluation.crop_similarity import CropEmbedder, crop_similarities, crop_window, trim_aspect
from vgtool.evaluation.evaluate import EvalConfig, evaluate_model
from vgtool.torchvision_compat import ensure_torchvision_importable

TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
TINY_TEXT = {**TINY_TOWER, "vocab_size": 100, "max_position_embeddings": 16}
TINY_VISION = {**TINY_TOWER, "image_size": 32, "patch_size": 8}
# family -> (model class, image processor class, its settings for 32 px inputs)
FAMILIES = {
    "clip": (
        "CLIPModel",
        "CLIPImageProcessor",
        {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
    ),
    "siglip": ("SiglipModel", "SiglipImageProcessor", {"size": {"height": 32, "width": 32}}),
}


def _save_tiny(family: str, folder: Path) -> Path:
    """A CLIP-family model with random weights and its image processor, saved with save_pretrained."""
    ensure_torchvision_importable()
    import transformers

    model_name, processor_name, processor_settings = FAMILIES[family]
    config_class = getattr(transformers, model_name).config_class
    text = {**TINY_TEXT, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    extra = {"projection_dim": 16} if family == "clip" else {}  # SigLIP embeds at the tower's width
    config = config_class(text_config=text, vision_config=TINY_VISION, **extra)
    torch.manual_seed(0)
    getattr(transformers, model_name)(config).save_pretrained(folder)
    getattr(transformers, processor_name)(**processor_settings).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crop_models")
    return {family: _save_tiny(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def embedders(tiny_models) -> dict[str, CropEmbedder]:
    return {family: CropEmbedder.load(folder, device="cpu") for family, folder in tiny_models.items()}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def cosine(embedder: CropEmbedder, a: Image.Image, b: Image.Image) -> float:
    embeddings = embedder.embed([a, b])
    return float(embeddings[0] @ embeddings[1])


# ---- the embedder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_identical_crops_score_one_and_different_crops_less(embedders, family: str) -> None:
    embedder = embedders[family]
    image = random_image(80, 60, seed=1)
    crop = image.crop((10, 10, 50, 40))
    assert cosine(embedder, crop, crop.copy()) == pytest.approx(1.0, abs=1e-5)
    assert cosine(embedder, crop, random_image(40, 30, seed=2)) < 1.0 - 1e-3
    assert cosine(embedder, crop, image.crop((30, 20, 70, 50))) < 1.0 - 1e-3


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_embedding_matches_get_image_features_on_the_processor_output(tiny_models, embedders, family) -> None:
    import transformers

    model_name, processor_name, _ = FAMILIES[family]
    model = getattr(transformers, model_name).from_pretrained(tiny_models[family]).eval()
    processor = getattr(transformers, processor_name).from_pretrained(tiny_models[family])
    embedder = embedders[family]
    assert type(embedder.model) is type(model) and type(embedder.image_processor) is type(processor)
    crop = random_image(90, 70, seed=3).crop((5, 8, 61, 50))
    with torch.no_grad():
        output = model.get_image_features(**processor(images=crop, return_tensors="pt"))
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    expected = torch.nn.functional.normalize(features, dim=-1)[0]
    torch.testing.assert_close(embedder.embed([crop])[0], expected, atol=1e-5, rtol=0)
    # batching changes nothing: the same crop among others, two crops per model call
    others = [random_image(30 + 10 * i, 40, seed=10 + i) for i in range(2)]
    torch.testing.assert_close(embedder.embed([*others, crop], batch_size=2)[2], expected, atol=1e-5, rtol=0)


def test_embed_output_is_unit_length_on_the_cpu(embedders) -> None:
    embeddings = embedders["clip"].embed([random_image(20, 30, seed=i) for i in range(3)])
    assert embeddings.shape == (3, 16) and embeddings.device.type == "cpu"  # projection_dim 16
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert embedders["clip"].embed([]).shape[0] == 0


def test_identity_records_the_spec_and_a_folder_hash(tiny_models, embedders) -> None:
    identity = embedders["clip"].identity()
    assert identity["spec"] == str(tiny_models["clip"]) and identity["model"].startswith("hf-folder:")
    assert (
        CropEmbedder.load(f"hf:{tiny_models['clip']}", device="cpu").identity()["model"] == identity["model"]
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: "openai/clip-vit-base-patch32", "name a hub model as hf:org/name"),
        (lambda tmp: str(tmp / "missing"), "no such folder"),
        (lambda tmp: "hf:a/b/c", "not a hub id"),
        ("vision_only", "has no get_image_features"),
        ("no_processor", "cannot load AutoImageProcessor"),
    ],
)
def test_bad_models_raise_one_line(tmp_path: Path, make, message: str) -> None:
    import transformers

    if make == "vision_only":  # a bare vision tower: no projection, no get_image_features
        spec = tmp_path / "vision"
        transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY_VISION)).save_pretrained(spec)
    elif make == "no_processor":
        spec = tmp_path / "clip"
        config = transformers.CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION)
        transformers.CLIPModel(config).save_pretrained(spec)
    else:
        spec = make(tmp_path)
    with pytest.raises(ModelSourceError, match=message) as caught:
        CropEmbedder.load(spec, device="cpu")
    assert "\n" not in str(caught.value)


# ---- crops ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box_xyxy", "window"),
    [
        ([10.2, 5.6, 30.4, 20.5], (10, 6, 30, 20)),  # edges rounded to pixel boundaries
        ([-5, -5, 20, 20], (0, 0, 20, 20)),  # clipped to the image
        ([50, 30, 90, 70], (50, 30, 64, 48)),
        ([10, 10, 10.4, 20], None),  # under half a pixel wide: empty
        ([10, 10, 10, 20], None),  # zero width
        ([70, 10, 80, 20], None),  # outside the image
        ([10, 48, 20, 60], None),  # below the image
        ([10, 10, 11, 11], (10, 10, 11, 11)),  # one pixel is a crop
    ],
)
def test_crop_window(box_xyxy, window) -> None:
    assert crop_window(box_xyxy, 64, 48) == window


@pytest.mark.parametrize(
    ("window", "trimmed"),
    [
        ((0, 0, 40, 10), (0, 0, 40, 10)),  # 4:1 is kept whole
        ((0, 0, 100, 10), (30, 0, 70, 10)),  # wider: the central 40 columns
        ((5, 0, 6, 50), (5, 23, 6, 27)),  # a one-pixel sliver: its central 4 pixels
        ((0, 0, 20, 20), (0, 0, 20, 20)),
    ],
)
def test_trim_aspect(window, trimmed) -> None:
    assert trim_aspect(window, 4.0) == trimmed


def _sample(path: Path, boxes_xyxy: list[list[float]], phrase: str = "thing") -> GroundingSample:
    return GroundingSample(
        image_path=path, phrase=phrase, boxes_xyxy=np.array(boxes_xyxy), image_id=path.stem
    )


def _prediction(*boxes_and_scores: tuple[list[float], float]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([b for b, _ in boxes_and_scores], dtype=np.float32).reshape(-1, 4)
    return boxes, np.array([s for _, s in boxes_and_scores], dtype=np.float32)


def test_crop_similarities_per_sample(embedders, tmp_path: Path) -> None:
    """Top box = truth -> 1; elsewhere -> below 1; no box or a box off the image -> 0; samples with
    no or several true boxes -> NaN; the top box is the highest-scoring one."""
    path = tmp_path / "a.png"
    random_image(80, 60, seed=4).save(path)
    truth = [10, 10, 40, 40]
    elsewhere = [45, 20, 75, 50]
    cases = [
        (_sample(path, [truth]), _prediction((truth, 0.9)), 1.0),
        (_sample(path, [truth]), _prediction((elsewhere, 0.9), (truth, 0.5)), "less"),
        (_sample(path, [truth]), _prediction(), 0.0),
        (_sample(path, [truth]), _prediction(([90, 70, 120, 90], 0.9), (truth, 0.5)), 0.0),
        (_sample(path, [truth]), _prediction(([20, 20, 20, 30], 0.9)), 0.0),  # zero width
        (_sample(path, []), _prediction((truth, 0.9)), "nan"),
        (_sample(path, [truth, elsewhere]), _prediction((truth, 0.9)), "nan"),
        (_sample(path, [[100, 100, 120, 120]]), _prediction((truth, 0.9)), "nan"),  # truth off the image
    ]
    similarities = crop_similarities(
        [c[0] for c in cases], [c[1] for c in cases], embedders["clip"], batch_size=3
    )
    for value, (_, _, expected) in zip(similarities, cases, strict=True):
        if expected == "nan":
            assert np.isnan(value)
        elif expected == "less":
            assert value < 1.0 - 1e-3
        else:
            assert value == pytest.approx(expected, abs=1e-5)


def test_crops_come_from_the_displayed_image(embedders, tmp_path: Path) -> None:
    """A photo stored sideways with an EXIF orientation tag is cropped as it is displayed."""
    displayed = random_image(80, 50, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated 90 degrees clockwise
    path = tmp_path / "sideways.jpg"
    displayed.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=100)
    from vgtool.data.decode import load_rgb

    upright = load_rgb(path)
    assert upright.size == (80, 50)
    truth, predicted = [5, 5, 45, 40], [30, 10, 75, 45]
    value = crop_similarities([_sample(path, [truth])], [_prediction((predicted, 1.0))], embedders["clip"])[0]
    expected = cosine(embedders["clip"], upright.crop(tuple(predicted)), upright.crop(tuple(truth)))
    assert value == pytest.approx(expected, abs=1e-5)


# ---- in the evaluation -------------------------------------------------------------------------------

IMAGES = [
    {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
    {"id": 2, "file_name": "b.png", "width": 80, "height": 60},
]
# (annotation id, image id, bbox xywh, phrase)
BOXES = [
    (1, 1, [4, 4, 20, 20], "red square"),
    (2, 1, [30, 5, 15, 15], "all circles"),
    (3, 1, [40, 25, 20, 20], "all circles"),
    (4, 2, [10, 10, 30, 30], "blue square"),
]
PHRASES = [
    {"id": 1, "image_id": 1, "phrase": "red square", "annotation_ids": [1], "kind": "single"},
    {"id": 2, "image_id": 1, "phrase": "all circles", "annotation_ids": [2, 3], "kind": "multi"},
    {"id": 3, "image_id": 2, "phrase": "blue square", "annotation_ids": [4], "kind": "single"},
    {"id": 4, "image_id": 2, "phrase": "a unicorn", "annotation_ids": [], "kind": "none"},
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two images, four phrases: two with one box, one with two, one naming nothing."""
    root = tmp_path / "data"
    root.mkdir()
    for seed, image in enumerate(IMAGES):
        random_image(image["width"], image["height"], seed=seed).save(root / image["file_name"])
    annotations = [
        {"id": i, "image_id": im, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, im, b, _ in BOXES
    ]
    coco = {
        "images": IMAGES,
        "categories": [{"id": 1, "name": "shape"}],
        "annotations": annotations,
        "phrases": PHRASES,
    }
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return root


def _predictions_file(path: Path, shift_blue: bool) -> Path:
    results = [
        {
            "image_id": im,
            "category_id": 1,
            "bbox": [40, 20, 30, 30] if shift_blue and phrase == "blue square" else b,
            "score": 1.0,
            "phrase": phrase,
        }
        for _, im, b, phrase in BOXES
    ]
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


runner = CliRunner()


@pytest.fixture
def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate_cli)
    return app


@pytest.mark.parametrize("shift_blue", [False, True])
def test_cli_scores_crop_similarity_of_a_predictions_file(
    cli_app, tiny_models, dataset: Path, tmp_path: Path, shift_blue: bool
) -> None:
    predictions = _predictions_file(tmp_path / "p.json", shift_blue)
    out = tmp_path / "eval"
    args = ["--data", str(dataset), "--predictions", str(predictions), "--out", str(out), "--no-plots"]
    result = runner.invoke(
        cli_app, [*args, "--crop-similarity", str(tiny_models["clip"]), "--device", "cpu", "-q"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["overall"]
    assert overall["n_crop_similarity"] == 2  # the two phrases with exactly one box
    if shift_blue:
        assert overall["crop_similarity"] < 1.0 - 1e-3
        assert metrics["by_kind"]["single"]["crop_similarity"] == overall["crop_similarity"]
    else:
        assert overall["crop_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["by_kind"]["multi"]["crop_similarity"] is None
    assert metrics["by_kind"]["multi"]["n_crop_similarity"] == 0
    assert metrics["settings"]["crop_similarity_model"]["spec"] == str(tiny_models["clip"])
    header = result.stdout.splitlines()[0]
    assert header.split()[-2:] == ["crop", "sim"]


def test_without_the_option_there_is_no_crop_similarity(cli_app, dataset: Path, tmp_path: Path) -> None:
    predictions = _predictions_file(tmp_path / "p.json", shift_blue=False)
    out = tmp_path / "eval"
    args = ["--data", str(dataset), "--predictions", str(predictions), "--out", str(out), "--no-plots", "-q"]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "crop_similarity" not in metrics["overall"] and "crop_similarity_model" not in metrics["settings"]
    assert "crop sim" not in metrics_table(metrics)


def test_evaluate_model_scores_crop_similarity(tiny_models, tiny_checkpoint, dataset: Path, tmp_path) -> None:
    config = EvalConfig(
        device="cpu", batch_size=1, plots=False, quiet=True, crop_similarity=str(tiny_models["clip"])
    )
    data = DataConfig(format="coco", path=str(dataset))
    metrics = evaluate_model(model=tiny_checkpoint, data=data, out_dir=tmp_path / "eval", config=config)
    assert metrics["overall"]["n_crop_similarity"] == 2
    assert -1.0 <= metrics["overall"]["crop_similarity"] <= 1.0
    assert "crop sim" in metrics_table(metrics)


def test_cli_rejects_a_missing_model_folder_before_loading_anything(cli_app, dataset, tmp_path) -> None:
    args = ["--data", str(dataset), "--predictions", str(_predictions_file(tmp_path / "p.json", False))]
    result = runner.invoke(
        cli_app, [*args, "--crop-similarity", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "no such model folder" in str(result.exception)


def test_a_hub_model_not_in_the_cache_offline_fails_fast_in_one_line(dataset: Path, tmp_path: Path) -> None:
    """An ``hf:`` id with HF_HUB_OFFLINE=1 and an empty cache: one ``error:`` line, before any
    evaluation work (no outputs), within seconds."""
    predictions = _predictions_file(tmp_path / "p.json", shift_blue=False)
    out = tmp_path / "eval"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
    }
    env.pop("HF_ENDPOINT", None)
    argv = ["evaluate", "--data", str(dataset), "--predictions", str(predictions), "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vgtool", *argv, "--crop-similarity", "hf:openai/clip-vit-base-patch32"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: hf:openai/clip-vit-base-patch32: not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in lines[0] and "hf download openai/clip-vit-base-patch32" in lines[0]
    assert not (out / "metrics.json").exists()
    assert elapsed < 60  # generous on a busy machine: importing torch is most of it, not a hub timeout
