"""vgtool checkpoints exported to ONNX and grounded by ONNX Runtime: the same boxes as torch at any
batch and phrase count, the same annotations.json on the bundled model, clear errors for files that
are not the graphs they should be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import random_image
from vgtool.data.image_dataset import ImageBatch
from vgtool.errors import CheckpointError
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.grounders import load_grounder
from vgtool.grounders.base import ModelKey
from vgtool.grounders.registry import model_key
from vgtool.models.postprocess import PostProcessConfig
from vgtool.onnx_export.export import export_onnx
from vgtool.onnx_runtime.folder import read_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "vgtool" / "assets" / "examples"
PHRASES = ["the red circle", "all blue squares", "a", "the green star left of the cross", "shape"]


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    export_onnx(tiny_checkpoint, out)
    return out


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "bundled"
    export_onnx(None, out)
    return out


def _batch(grounder, sizes: list[tuple[int, int]]) -> ImageBatch:
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    return ImageBatch(
        indices=list(range(len(images))),
        pixels=torch.stack([grounder.image_transform(image) for image in images]),
        sizes_wh=torch.tensor(sizes, dtype=torch.float32),
        images=None,
        failures=[],
    )


def test_manifest_records_the_source_and_a_passing_check(tiny_checkpoint, tiny_onnx):
    manifest = read_manifest(tiny_onnx)
    torch_grounder = load_grounder(tiny_checkpoint, device="cpu")
    assert manifest.family == "vlgtr" and set(manifest.graphs) == {"image", "text", "decode"}
    assert manifest.source == torch_grounder.identity()
    assert manifest.quantization is None
    assert manifest.check["max_abs_diff"]["boxes"] <= 1e-4


@pytest.mark.parametrize(
    ("sizes", "num_phrases"),
    [([(96, 72)], 1), ([(96, 72), (40, 120), (200, 64)], 3), ([(64, 64), (150, 90)], 5)],
)
def test_onnx_predictions_equal_torch_at_any_batch_and_phrase_count(
    tiny_checkpoint, tiny_onnx, sizes, num_phrases
):
    torch_grounder = load_grounder(tiny_checkpoint, device="cpu")
    onnx_grounder = load_grounder(tiny_onnx, device="cpu")
    batch = _batch(torch_grounder, sizes)
    phrases = PHRASES[:num_phrases]
    post = PostProcessConfig(threshold=0.0, top_k=3, nms_iou=0.7)
    expected = torch_grounder.predict(batch, torch_grounder.encode_phrases(phrases), postprocess=post)
    got = onnx_grounder.predict(batch, onnx_grounder.encode_phrases(phrases), postprocess=post)
    assert len(got) == len(expected) == len(sizes)
    for (w, h), a, b in zip(sizes, got, expected, strict=True):
        assert a.phrase_ids.tolist() == b.phrase_ids.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-4 * max(w, h))
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_onnx_grounds_chosen_pairs_like_torch(tiny_checkpoint, tiny_onnx):
    torch_grounder = load_grounder(tiny_checkpoint, device="cpu")
    onnx_grounder = load_grounder(tiny_onnx, device="cpu")
    batch = _batch(torch_grounder, [(80, 60), (60, 80)])
    pairs = [[0, 2], [1]]
    post = PostProcessConfig(threshold=0.0, top_k=2)
    expected = torch_grounder.predict(
        batch, torch_grounder.encode_phrases(PHRASES[:3]), postprocess=post, pairs=pairs
    )
    got = onnx_grounder.predict(
        batch, onnx_grounder.encode_phrases(PHRASES[:3]), postprocess=post, pairs=pairs
    )
    for a, b in zip(got, expected, strict=True):
        assert a.phrase_ids.tolist() == b.phrase_ids.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2)


def test_bundled_model_gives_the_same_annotations_through_onnx(bundled_onnx, tmp_path):
    phrases = (EXAMPLES / "phrases.txt").read_text().split("\n")
    phrases = [p for p in phrases if p.strip()]
    documents = []
    for name, model in (("torch", None), ("onnx", bundled_onnx)):
        config = GroundConfig(device="cpu", crops=False, overlays=False, quiet=True)
        summary = ground([EXAMPLES], phrases, out_dir=tmp_path / name, model=model, config=config)
        documents.append(json.loads((summary.out_dir / "annotations.json").read_text()))
    torch_doc, onnx_doc = documents
    assert torch_doc["annotations"], "the bundled model finds the example shapes"
    # the model field differs (an ONNX run never resumes a torch run); everything else is equal
    assert onnx_doc["info"]["model"] == torch_doc["info"]["model"] + "+onnx"
    for key in ("images", "categories", "annotations"):
        assert onnx_doc[key] == torch_doc[key]


def test_a_graph_file_in_the_folder_names_the_folder(tiny_onnx):
    grounder = load_grounder(tiny_onnx / "image.onnx", device="cpu")
    assert grounder.source == tiny_onnx and grounder.settings()["runtime"] == "onnxruntime"


def test_a_truncated_graph_gets_one_clear_error(tiny_onnx, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx, broken)
    data = (broken / "decode.onnx").read_bytes()
    (broken / "decode.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"decode\.onnx: not a loadable ONNX graph"):
        load_grounder(broken, device="cpu")


def test_a_graph_of_another_role_gets_one_clear_error(tiny_onnx, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_onnx, swapped)
    shutil.copy(swapped / "text.onnx", swapped / "image.onnx")
    with pytest.raises(CheckpointError, match=r"image\.onnx: not the graph this folder's manifest describes"):
        load_grounder(swapped, device="cpu")


def test_a_lone_onnx_file_and_a_missing_graph_are_refused(tiny_onnx, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_onnx / "image.onnx", lone / "model.onnx")
    with pytest.raises(CheckpointError, match=r"no onnx\.json here"):
        load_grounder(lone / "model.onnx", device="cpu")
    missing = tmp_path / "missing"
    shutil.copytree(tiny_onnx, missing)
    (missing / "text.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"text\.onnx: missing"):
        load_grounder(missing, device="cpu")


def test_a_bad_onnx_model_is_refused_before_torch_is_imported(tmp_path):
    (tmp_path / "images").mkdir()
    random_image(32, 32).save(tmp_path / "images" / "a.png")
    code = (
        "import sys\n"
        "from vgtool.cli.main import main\n"
        "try:\n"
        f"    main(['ground', {str(tmp_path / 'images')!r}, '-p', 'x', '-m', {str(tmp_path / 'nope.onnx')!r},"
        f" '-o', {str(tmp_path / 'out')!r}])\n"
        "except SystemExit as exit:\n"
        "    print('torch' in sys.modules, exit.code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "1"], result.stdout + result.stderr
    assert "nope.onnx: no such ONNX file" in result.stderr


def test_quantized_export_is_marked_and_grounds(tiny_checkpoint, tmp_path):
    out = tmp_path / "int8"
    manifest = export_onnx(tiny_checkpoint, out, quantize=True)
    assert manifest.quantization == "int8-dynamic" and "quantized" in manifest.check
    grounder = load_grounder(out, device="cpu")
    assert grounder.identity()["model"].endswith("+onnx-int8-dynamic")
    batch = _batch(grounder, [(64, 48), (48, 64)])
    found = grounder.predict(
        batch, grounder.encode_phrases(PHRASES[:2]), postprocess=PostProcessConfig(threshold=0.0, top_k=1)
    )
    assert [len(g.scores) for g in found] == [2, 2]


def test_export_refuses_a_non_empty_folder_without_overwrite(tiny_checkpoint, tiny_onnx):
    with pytest.raises(CheckpointError, match="not empty"):
        export_onnx(tiny_checkpoint, tiny_onnx)


def test_an_onnx_export_of_the_bundled_model_says_what_it_knows(bundled_onnx, tiny_onnx, tmp_path):
    from typer.testing import CliRunner

    from vgtool.cli.main import app

    def run(model: Path, out: str):
        args = ["ground", str(EXAMPLES / "shapes_1.png"), "-p", "the red circle", "-m", str(model)]
        result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / out), "-q", "--workers", "0"])
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if "bundled model knows only" in line]

    assert len(run(bundled_onnx, "bundled")) == 1
    assert run(tiny_onnx, "tiny") == []


def test_the_model_key_is_known_without_loading(tiny_checkpoint, tiny_onnx, bundled_onnx):
    """Source, identity and threshold from the files alone equal the loaded grounder's: the bundled
    model (its calibrated threshold), a tiny checkpoint (the fallback) and both exports."""
    for spec in (None, "default", tiny_checkpoint, tiny_onnx, bundled_onnx):
        assert model_key(spec) == ModelKey.of(load_grounder(spec, device="cpu")), spec
