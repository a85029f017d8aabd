from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from vgtool.cli.evaluate import evaluate_cli, metrics_table
from vgtool.datasets import DataConfig, load_samples
from vgtool.errors import InputError
from vgtool.evaluation.evaluate import EvalConfig, evaluate_model, evaluate_predictions
from vgtool.evaluation.predict import predict_samples

IMAGES = [
    {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
    {"id": 2, "file_name": "imgs/b.png", "width": 80, "height": 60},
]
CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]
# (annotation id, image id, category id, bbox xywh, phrase)
BOXES = [
    (1, 1, 1, [4, 4, 20, 20], "red square"),
    (2, 1, 2, [30, 5, 15, 15], "all circles"),
    (3, 1, 2, [40, 25, 20, 20], "all circles"),
    (4, 2, 1, [10, 10, 30, 30], "blue square"),
    (5, 2, 2, [50, 5, 10, 10], "small circle"),
]
PHRASES = [
    {"id": 1, "image_id": 1, "phrase": "red square", "annotation_ids": [1], "kind": "single"},
    {"id": 2, "image_id": 1, "phrase": "all circles", "annotation_ids": [2, 3], "kind": "multi"},
    {"id": 3, "image_id": 1, "phrase": "green triangle", "annotation_ids": [], "kind": "none"},
    {"id": 4, "image_id": 2, "phrase": "blue square", "annotation_ids": [4], "kind": "single"},
    {"id": 5, "image_id": 2, "phrase": "small circle", "annotation_ids": [5], "kind": "single"},
    {"id": 6, "image_id": 2, "phrase": "a unicorn", "annotation_ids": [], "kind": "none"},
]
SHIFTED_BLUE_SQUARE = [30, 10, 30, 30]  # IoU 300 / 1500 = 0.2 with the true box


def _random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _coco() -> dict:
    annotations = [
        {"id": i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, im, c, b, _ in BOXES
    ]
    return {"images": IMAGES, "categories": CATEGORIES, "annotations": annotations, "phrases": PHRASES}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two images, six phrases: three single, one multi-box, two that name nothing."""
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    for seed, image in enumerate(IMAGES):
        _random_image(image["width"], image["height"], seed=seed).save(root / image["file_name"])
    (root / "annotations.json").write_text(json.dumps(_coco()), encoding="utf-8")
    return root


def _results(shift: bool = False, spurious: Sequence[tuple[list[float], float]] = ()) -> list[dict]:
    """The ground truth as a COCO results list (score 1); ``shift`` misses the blue square, and the
    ``spurious`` (bbox xywh, score) boxes are predicted for the absent unicorn."""
    results = [
        {
            "image_id": im,
            "category_id": c,
            "bbox": SHIFTED_BLUE_SQUARE if shift and phrase == "blue square" else b,
            "score": 1.0,
            "phrase": phrase,
        }
        for _, im, c, b, phrase in BOXES
    ]
    for bbox, score in spurious:
        results.append({"image_id": 2, "category_id": 1, "bbox": bbox, "score": score, "phrase": "a unicorn"})
    return results


def _write(path: Path, document) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _evaluate(dataset: Path, tmp_path: Path, document) -> dict:
    predictions = _write(tmp_path / "predictions.json", document)
    return evaluate_predictions(
        predictions=predictions,
        data=DataConfig(path=str(dataset)),
        out_dir=tmp_path / "eval",
        config=EvalConfig(plots=False),
    )


def _with_file_names(file_names: list[str]) -> dict:
    """vgtool-style annotations.json: its own image ids and file names, a phrase on every box."""
    images = [{"id": 10 + i, "file_name": name} for i, name in enumerate(file_names)]
    anns = [{"id": n, **r, "image_id": 10 + r["image_id"] - 1} for n, r in enumerate(_results(), start=1)]
    return {"images": images, "categories": CATEGORIES, "annotations": anns}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_results(), id="results-list-by-image-id"),
        pytest.param(_coco(), id="ground-truth-file-with-phrase-list"),
        pytest.param(_with_file_names(["a.png", "imgs/b.png"]), id="file-names-relative"),
        pytest.param(_with_file_names(["run/a.png", "b.png"]), id="file-names-basename"),
    ],
)
def test_perfect_predictions(dataset: Path, tmp_path: Path, document) -> None:
    metrics = _evaluate(dataset, tmp_path, document)
    overall = metrics["overall"]
    assert overall["acc@0.5"] == overall["acc@0.75"] == overall["miou"] == 1.0
    assert overall["map"] == overall["map50"] == overall["map75"] == 1.0
    assert overall["no_object_fp_rate"] == 0.0
    assert (overall["n_samples"], overall["n_with_boxes"], overall["n_no_object"]) == (6, 4, 2)
    assert sorted(metrics["by_kind"]) == ["multi", "none", "single"]
    assert metrics["by_kind"]["multi"]["map50"] == 1.0
    assert metrics["by_kind"]["none"]["acc@0.5"] is None  # nothing to ground
    assert metrics["by_kind"]["none"]["map"] is None
    assert metrics["matching"] == {
        "boxed_samples_without_prediction": 0,
        "unmatched_predictions": 0,
        "unmatched_images": 0,
    }


def test_metrics_by_form_when_the_dataset_names_its_phrase_forms(dataset: Path, tmp_path: Path) -> None:
    coco = json.loads(json.dumps(_coco()))  # a copy: PHRASES stays as it is for other tests
    forms = {"red square": "attributes", "blue square": "relation", "small circle": "superlative"}
    for phrase in coco["phrases"]:
        if phrase["phrase"] in forms:
            phrase["form"] = forms[phrase["phrase"]]
    _write(dataset / "annotations.json", coco)
    metrics = _evaluate(dataset, tmp_path, _results(shift=True))  # misses the blue square
    by_form = metrics["by_form"]
    assert sorted(by_form) == ["single/attributes", "single/relation", "single/superlative"]
    assert by_form["single/relation"]["acc@0.5"] == 0.0
    assert by_form["single/attributes"]["acc@0.5"] == by_form["single/superlative"]["acc@0.5"] == 1.0
    assert sum(table["n_samples"] for table in by_form.values()) == 3  # phrases without a form: none
    assert "single/relation" in metrics_table(metrics)


def test_no_forms_no_form_tables(dataset: Path, tmp_path: Path) -> None:
    assert _evaluate(dataset, tmp_path, _results())["by_form"] == {}


def test_a_missed_box_lowers_accuracy_by_its_share(dataset: Path, tmp_path: Path) -> None:
    metrics = _evaluate(dataset, tmp_path, _results(shift=True))
    assert metrics["overall"]["acc@0.5"] == pytest.approx(3 / 4)  # one of four phrases with boxes
    assert metrics["overall"]["miou"] == pytest.approx((1 + 1 + 1 + 0.2) / 4)
    assert metrics["by_kind"]["single"]["acc@0.5"] == pytest.approx(2 / 3)
    assert metrics["by_kind"]["multi"]["acc@0.5"] == 1.0
    assert metrics["overall"]["map50"] < 1.0


@pytest.mark.parametrize(
    ("spurious", "threshold", "fp_rate", "mean_false_boxes"),
    [
        ([([0, 0, 10, 10], 0.9)], 0.5, 1 / 2, 1 / 2),  # one of the two no-object phrases
        ([([0, 0, 10, 10], 0.5)], 0.5, 1 / 2, 1 / 2),  # a score at the threshold counts
        ([([0, 0, 10, 10], 0.3)], 0.5, 0.0, 0.0),
        ([([0, 0, 10, 10], 0.03)], 0.01, 1 / 2, 1 / 2),  # below map_min_score, above the threshold
        ([([0, 0, 10, 10], 0.9), ([1, 0, 10, 10], 0.8)], 0.5, 1 / 2, 1 / 2),  # IoU 0.82: NMS merges them
        ([([0, 0, 10, 10], 0.9), ([40, 0, 10, 10], 0.8)], 0.5, 1 / 2, 2 / 2),  # apart: two false boxes
    ],
)
def test_a_box_for_an_absent_object_is_a_false_positive(
    dataset: Path, tmp_path: Path, spurious, threshold: float, fp_rate: float, mean_false_boxes: float
) -> None:
    predictions = _write(tmp_path / "p.json", _results(spurious=spurious))
    metrics = evaluate_predictions(
        predictions=predictions,
        data=DataConfig(path=str(dataset)),
        out_dir=tmp_path / "eval",
        config=EvalConfig(threshold=threshold, plots=False),
    )
    for table in (metrics["overall"], metrics["by_kind"]["none"]):
        assert table["no_object_fp_rate"] == pytest.approx(fp_rate)
        assert table["no_object_mean_false_boxes"] == pytest.approx(mean_false_boxes)
    assert metrics["overall"]["acc@0.5"] == 1.0


def test_unmatched_predictions_are_counted(dataset: Path, tmp_path: Path) -> None:
    document = [r for r in _results() if r["phrase"] != "red square"]
    document.append({"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "phrase": "x"})
    metrics = _evaluate(dataset, tmp_path, document)
    assert metrics["matching"]["unmatched_predictions"] == 1
    assert metrics["matching"]["boxed_samples_without_prediction"] == 1
    assert metrics["overall"]["n_without_prediction"] == 3  # with the two no-object phrases
    assert metrics["overall"]["acc@0.5"] == pytest.approx(3 / 4)


def test_unknown_file_names_match_nothing(dataset: Path, tmp_path: Path) -> None:
    metrics = _evaluate(dataset, tmp_path, _with_file_names(["a.png", "other/c.png"]))
    assert metrics["matching"] == {
        "boxed_samples_without_prediction": 2,  # the two phrases of b.png
        "unmatched_predictions": 2,
        "unmatched_images": 1,
    }
    assert metrics["overall"]["acc@0.5"] == pytest.approx(2 / 4)


def test_category_names_stand_in_for_missing_phrases(dataset: Path, tmp_path: Path) -> None:
    # no "phrase" field: boxes are filed under their category's name, here from the dataset's categories
    document = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.8}]
    metrics = _evaluate(dataset, tmp_path, document)
    assert metrics["matching"]["unmatched_predictions"] == 1  # "square" is no phrase of the dataset


def test_phrase_and_score_are_read_from_attributes_as_cvat_keeps_them(dataset: Path, tmp_path: Path) -> None:
    # CVAT and datumaro keep a box's phrase and score in "attributes" (the score as text, at times);
    # the top-level fields, where present, lose to them
    document = [
        {
            **{k: v for k, v in r.items() if k not in ("phrase", "score")},
            "score": 0.001,  # below map_min_score: read, it would empty the mAP
            "attributes": {"phrase": r["phrase"], "score": "0.9", "occluded": False},
        }
        for r in _results()
    ]
    unicorn = {"phrase": "a unicorn", "score": 0.3}  # under the 0.5 threshold: no false positive
    document.append(
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.95, "attributes": unicorn}
    )
    metrics = _evaluate(dataset, tmp_path, document)
    assert metrics["overall"]["acc@0.5"] == metrics["overall"]["map50"] == 1.0
    assert metrics["matching"]["unmatched_predictions"] == 0  # not filed under category names
    assert metrics["overall"]["no_object_fp_rate"] == 0.0


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"images": []}, "expected a COCO results list"),
        (
            [{"image_id": 1, "bbox": [0, 0, 1, 1], "attributes": {"phrase": "x", "rotation": 30}}],
            "rotated by 30",
        ),
        (
            [{"image_id": 1, "bbox": [0, 0, 1, 1], "attributes": {"phrase": "x", "score": "high"}}],
            "non-numeric",
        ),
        ([{"image_id": 1, "phrase": "red square", "score": 1.0}], "has no 'bbox'"),
        ([{"bbox": [0, 0, 1, 1], "phrase": "red square"}], "has no 'image_id'"),
        ([{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]}], "category 7 has no name"),
        ([3], "prediction 0 is not an object"),
        ([{"image_id": 1, "phrase": "red square", "bbox": [0, 0, 1, 1], "score": "high"}], "non-numeric"),
    ],
)
def test_bad_prediction_files(dataset: Path, tmp_path: Path, document, error: str) -> None:
    with pytest.raises(InputError, match=error):
        _evaluate(dataset, tmp_path, document)


def test_unreadable_prediction_file(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.json: not JSON"):
        evaluate_predictions(predictions=bad, data=DataConfig(path=str(dataset)), out_dir=tmp_path / "e")


def _in_unit_range(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_evaluate_model_writes_all_outputs(dataset: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "eval"
    config = EvalConfig(device="cpu", batch_size=2, quiet=True)
    metrics = evaluate_model(
        model=tiny_checkpoint, data=DataConfig(path=str(dataset)), out_dir=out, config=config
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for table in [metrics["overall"], *metrics["by_kind"].values()]:
        for key in ("acc@0.5", "acc@0.75", "miou", "map", "map50", "map75", "no_object_fp_rate"):
            assert _in_unit_range(table[key]), (key, table[key])
    assert metrics["overall"]["n_samples"] == 6
    assert sum(metrics["iou_histogram"]["counts"]) == 4
    for name in ("iou_histogram.png", "examples_best_worst.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    results = json.loads((out / "predictions.json").read_text())
    phrases = {p["phrase"] for p in PHRASES}
    assert results and all(r["phrase"] in phrases and len(r["bbox"]) == 4 for r in results)
    assert all(0.0 <= r["score"] <= 1.0 for r in results)
    assert {(r["image_id"], r["phrase"]) for r in results} == {(p["image_id"], p["phrase"]) for p in PHRASES}

    # predictions.json, scored as a predictions file, gives the model's numbers back
    rescored = evaluate_predictions(
        predictions=out / "predictions.json",
        data=DataConfig(path=str(dataset)),
        out_dir=tmp_path / "again",
        config=EvalConfig(plots=False),
    )
    for key in ("acc@0.5", "acc@0.75", "miou", "map", "map50", "no_object_fp_rate"):
        assert rescored["overall"][key] == pytest.approx(metrics["overall"][key], abs=1e-3), key


def test_evaluate_model_output_is_deterministic(dataset: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    config = EvalConfig(device="cpu", plots=False, quiet=True)
    for name in ("one", "two"):
        evaluate_model(
            model=tiny_checkpoint, data=DataConfig(path=str(dataset)), out_dir=tmp_path / name, config=config
        )
    for name in ("metrics.json", "predictions.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


@pytest.fixture
def tiny_grounder(tiny_checkpoint: Path):
    from vgtool.grounders import load_grounder

    return load_grounder(tiny_checkpoint, device="cpu")


def test_predict_encodes_each_image_once(
    dataset: Path, tiny_grounder, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = load_samples(DataConfig(path=str(dataset)))
    samples = [*samples, samples[0]]  # a repeated (image, phrase) pair too
    images_seen: list[int] = []
    phrases_seen: list[int] = []
    net = tiny_grounder.net
    encode_image, encode_text = net.encode_image, net.encode_text

    def count_images(pixels):
        images_seen.append(len(pixels))
        return encode_image(pixels)

    def count_phrases(input_ids, attention_mask):
        phrases_seen.append(len(input_ids))
        return encode_text(input_ids, attention_mask)

    monkeypatch.setattr(net, "encode_image", count_images)
    monkeypatch.setattr(net, "encode_text", count_phrases)
    together = predict_samples(tiny_grounder, samples, batch_size=16, progress=False)
    assert images_seen == [2] and phrases_seen == [6]  # 7 samples, 2 images, 6 distinct phrases
    images_seen.clear()
    apart = predict_samples(tiny_grounder, samples, batch_size=1, progress=False)
    assert images_seen == [1, 1]

    num_queries = net.config.decoder.num_queries
    for sample, (boxes_xyxy, scores), (boxes_apart, scores_apart) in zip(
        samples, together, apart, strict=True
    ):
        width, height = Image.open(sample.image_path).size
        assert boxes_xyxy.shape == (len(scores), 4) and 0 < len(scores) <= num_queries
        assert (np.diff(scores) <= 0).all() and ((scores >= 0) & (scores <= 1)).all()
        assert (boxes_xyxy[:, [0, 2]] <= width).all() and (boxes_xyxy[:, [1, 3]] <= height).all()
        np.testing.assert_allclose(boxes_xyxy, boxes_apart, atol=1e-3)  # batching changes nothing
        np.testing.assert_allclose(scores, scores_apart, atol=1e-5)
    np.testing.assert_array_equal(together[0][0], together[-1][0])


def test_predict_names_an_undecodable_image(dataset: Path, tiny_grounder) -> None:
    (dataset / "imgs" / "b.png").write_bytes(b"not a png")
    samples = load_samples(DataConfig(path=str(dataset)))
    with pytest.raises(InputError, match=r"b\.png: not an image"):
        predict_samples(tiny_grounder, samples, progress=False)


def test_predict_without_samples(tiny_grounder) -> None:
    assert predict_samples(tiny_grounder, []) == []


runner = CliRunner()


@pytest.fixture
def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate_cli)
    return app


def test_cli_scores_a_predictions_file(cli_app, dataset: Path, tmp_path: Path) -> None:
    predictions = _write(tmp_path / "p.json", _results(shift=True))
    out = tmp_path / "eval"
    result = runner.invoke(
        cli_app, ["--data", str(dataset), "--predictions", str(predictions), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "acc@0.5" in result.stdout and "overall" in result.stdout and "single" in result.stdout
    assert "warning" not in result.output
    assert json.loads((out / "metrics.json").read_text())["overall"]["acc@0.5"] == 0.75
    assert (out / "iou_histogram.png").is_file() and (out / "examples_best_worst.png").is_file()


def test_cli_evaluates_a_model(cli_app, dataset: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "eval"
    args = ["--data", str(dataset), "-m", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "-q"]
    result = runner.invoke(cli_app, [*args, "--format", "coco", "--batch-size", "1", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert (out / "predictions.json").is_file() and (out / "metrics.json").is_file()
    assert not (out / "examples_best_worst.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m", "--predictions", "{p}"], "not both"),
        (["--predictions", "{missing}"], "does not exist"),
        (["--format", "yolo"], "yolo"),
    ],
)
def test_cli_usage_errors(cli_app, dataset: Path, tmp_path: Path, args: list[str], message: str) -> None:
    predictions = _write(tmp_path / "p.json", _results())
    args = [a.format(p=predictions, missing=tmp_path / "missing.json") for a in args]
    result = runner.invoke(cli_app, ["--data", str(dataset), *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_help_shows_an_example(cli_app) -> None:
    result = runner.invoke(cli_app, ["--help"])
    assert result.exit_code == 0 and "Example: vgtool evaluate" in result.output
