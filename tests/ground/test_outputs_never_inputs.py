"""Outputs are never inputs: nothing under --out is listed, however the paths are written, and other
runs' output folders met while descending are skipped with one warning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import random_image
from tests.prediction.test_fake_grounder import BoxPerPhrase
from vgtool.cli.main import app
from vgtool.data.listing import list_images
from vgtool.errors import InputError
from vgtool.ground.pipeline import GroundConfig, ground

PHRASES = ["cat", "dog"]
CONFIG = GroundConfig(recursive=True, batch_size=2, num_workers=0, quiet=True)
IMAGES = ["a.png", "sub/b.png"]


def _fake_run(folder: Path) -> None:
    """What a run leaves: run key, journal, an overlay and a crop."""
    (folder / "overlays" / "sub").mkdir(parents=True)
    (folder / "crops" / "dog").mkdir(parents=True)
    (folder / "run-key.json").write_text("{}")
    (folder / "journal.jsonl").write_text("")
    random_image(8, 8).save(folder / "overlays" / "a.png.jpg")
    random_image(8, 8).save(folder / "overlays" / "sub" / "b.png.jpg")
    random_image(8, 8).save(folder / "crops" / "dog" / "a_1.jpg")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``images/`` with two images, this run's ``images/out`` and another run's ``images/old``."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, name in enumerate(IMAGES):
        random_image(24, 16, seed=i).save(images / name)
    _fake_run(images / "out")
    _fake_run(images / "old")
    (tmp_path / "link").symlink_to(images)
    (images / "peek").symlink_to(images / "out" / "overlays")  # a folder link into --out
    (images / "alias.jpg").symlink_to(images / "out" / "overlays" / "a.png.jpg")  # a file link
    (tmp_path / "list.txt").write_text("images/a.png\nimages/out/overlays/a.png.jpg\n")
    return tmp_path


def _names(entries) -> list[str]:
    return [e.file_name for e in entries]


@pytest.mark.parametrize(
    ("inputs", "out", "names"),
    [
        (["images"], "images/out", IMAGES),
        (["link"], "images/out", IMAGES),  # the input through a symlink
        (["images"], "link/out", IMAGES),  # --out through a symlink
        ([".//images/"], "images/sub/../out", IMAGES),
        (["images/**/*.png", "images/**/*.jpg"], "images/out", IMAGES),
        (["list.txt"], "images/out", ["images/a.png"]),
        (["images", "images/out/overlays"], "link/out", IMAGES),
        (["images/out/overlays"], "images/out", InputError),
        (["link/out/overlays/a.png.jpg"], "images/out", InputError),
        (["images/peek"], "images/out", InputError),
    ],
    ids=[
        "relative",
        "input-symlink",
        "out-symlink",
        "odd-spellings",
        "globs",
        "list-file",
        "overlays-beside-input",
        "overlays-folder",
        "overlay-file",
        "link-into-out",
    ],
)
def test_nothing_under_out_is_listed(tree, monkeypatch, inputs, out, names):
    monkeypatch.chdir(tree)
    warnings: list[str] = []
    if names is InputError:
        with pytest.raises(InputError, match="only outputs of vgtool runs, which are never inputs"):
            list_images(inputs, recursive=True, exclude=[out], warn=warnings.append)
        return
    entries = list_images(inputs, recursive=True, exclude=[out], warn=warnings.append)
    assert _names(entries) == names
    for entry in entries:
        assert not Path(os.path.realpath(entry.path)).is_relative_to((tree / "images" / "out").resolve())
    assert len(warnings) <= 1 and all("/old)" in w for w in warnings)  # --out is not "another run"


def test_other_runs_met_while_descending_are_skipped_with_one_warning(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "images" / "deeper").mkdir()
    _fake_run(tree / "images" / "deeper" / "third")
    warnings: list[str] = []
    entries = list_images(["images"], recursive=True, exclude=["images/out"], warn=warnings.append)
    assert _names(entries) == IMAGES
    assert warnings == [
        "skipped 2 folders holding the outputs of another vgtool run (images/deeper/third, images/old); "
        "outputs are not read as inputs"
    ]
    # named as an input, another run's folder is read (its crops may well be what is wanted)
    assert _names(list_images(["images/old/crops"], recursive=True, exclude=["images/out"])) == [
        "dog/a_1.jpg"
    ]


def test_out_inside_the_input_twice_grounds_nothing_new(tree, monkeypatch, capsys):
    monkeypatch.chdir(tree)
    (tree / "images" / "peek").unlink()
    (tree / "images" / "alias.jpg").unlink()
    out = tree / "images" / "run"
    first = ground([tree / "images"], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    assert first.grounded == 2
    before = (out / "annotations.json").read_bytes()
    for inputs, out_dir in [
        (["images"], "images/run"),
        (["link"], "images/run"),
        ([tree / "images"], "link/run"),
    ]:
        fake = BoxPerPhrase()
        again = ground(inputs, PHRASES, out_dir=out_dir, model=fake, config=CONFIG)
        assert again.grounded == 0 and again.resumed == 2 and fake.predicted_images == 0
        assert (out / "annotations.json").read_bytes() == before
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4, warnings  # one per run: images/old and images/out, not images/run
    assert all(w.startswith("warning: skipped 2 folders holding the outputs of another") for w in warnings)
    assert not any("run)" in w or "run," in w for w in warnings)


def test_the_cli_never_reads_its_own_outputs(tree, tiny_checkpoint):
    def args(out: Path) -> list[str]:
        return [
            "ground",
            str(tree / "images"),
            "-p",
            "dog",
            "--model",
            str(tiny_checkpoint),
            "--out",
            str(out),
        ]

    options = ["-r", "--workers", "0", "--threshold", "0", "--quiet"]
    (tree / "images" / "peek").unlink()
    (tree / "images" / "alias.jpg").unlink()
    out = tree / "images" / "run"
    first = CliRunner().invoke(app, [*args(out), *options])
    assert first.exit_code == 0, first.output
    before = (out / "annotations.json").read_bytes()
    again = CliRunner().invoke(app, [*args(tree / "link" / "run"), *options])  # --out through a symlink
    assert again.exit_code == 0, again.output
    assert (out / "annotations.json").read_bytes() == before
    assert again.output.count("warning: skipped 2 folders holding the outputs of another vgtool run") == 1
