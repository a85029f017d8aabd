"""A first run is honest: the bundled model says what it knows, and a run without boxes says so."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from vgtool.cli.main import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "vgtool" / "assets" / "examples"


def _ground(*args: str):
    return runner.invoke(app, ["ground", *args, "--quiet", "--workers", "0"])


def test_the_bundled_model_says_once_what_it_knows(tmp_path):
    result = _ground(str(EXAMPLES / "shapes_1.png"), "-p", "the red circle", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "bundled model knows only" in line]
    assert len(notes) == 1
    assert "vgtool synth" in notes[0] and "--model hf:" in notes[0]


def test_another_model_gets_no_such_note(image_folder, tiny_checkpoint, tmp_path):
    result = _ground(
        str(image_folder), "-p", "dog", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 0, result.output
    assert "bundled model" not in result.output


def test_a_run_without_boxes_says_what_to_try(image_folder, tiny_checkpoint, tmp_path):
    args = [str(image_folder), "-p", "dog", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o")]
    result = _ground(*args, "--threshold", "1.0")
    assert result.exit_code == 0, result.output
    assert "no boxes in 4 images at threshold 1: try a lower --threshold" in result.output
    found = _ground(*args[:-1], str(tmp_path / "found"), "--threshold", "0")
    assert "no boxes" not in found.output


def test_info_shows_the_domain_and_metadata():
    result = runner.invoke(app, ["info", "default"])
    assert result.exit_code == 0, result.output
    assert "domain: the coloured 2D shapes of the `vgtool synth` benchmark" in result.output
    assert '"calibrated_on"' in result.output  # the stored metadata
