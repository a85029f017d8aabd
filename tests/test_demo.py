"""The README's first command: ``make demo`` grounds the bundled examples with the bundled model."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo_command() -> list[str]:
    """The ``demo`` recipe of the Makefile, with its variables filled in."""
    makefile = (ROOT / "Makefile").read_text()
    examples = re.search(r"^EXAMPLES := (.+)$", makefile, re.M).group(1).strip()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    lines = [line.strip() for line in recipe.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one command: no hidden set-up step beyond `setup`
    command = lines[0].replace("$(EXAMPLES)", examples)
    assert command.startswith("$(BIN)/vgtool ground ")
    return shlex.split(command.replace("$(BIN)/vgtool", "vgtool", 1))


def test_demo_command_writes_annotations_crops_and_overlays(tmp_path):
    args = _demo_command()
    out_index = args.index("--out") + 1
    args[out_index] = str(tmp_path / "demo")
    done = subprocess.run(
        [sys.executable, "-m", "vgtool", *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "demo"
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(img["file_name"] for img in coco["images"]) == [f"shapes_{i}.png" for i in range(1, 5)]
    assert coco["annotations"], "the default model found nothing in the examples"
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        f"shapes_{i}.png.jpg" for i in range(1, 5)
    ]
    assert len(list((out / "crops").rglob("*.jpg"))) == len(coco["annotations"])
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["images_listed"] == 4 and counts["skipped"] == 0


STORED = ROOT / "tests" / "fixtures" / "demo_annotations.json"


def test_demo_annotations_match_the_stored_copy(tmp_path):
    """``make demo``'s annotations.json against a stored copy of it (sha256 79da5250...bec4 on the
    machine that wrote it): the same images, ids, categories, phrases and order, and the same numbers
    up to their rounding (another CPU may sum in another order and round the last digit the other way).
    """
    args = _demo_command()
    args[args.index("--out") + 1] = str(tmp_path / "demo")
    done = subprocess.run(
        [sys.executable, "-m", "vgtool", *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    ours = json.loads((tmp_path / "demo" / "annotations.json").read_text())
    stored = json.loads(STORED.read_text())
    assert {k: v for k, v in ours.items() if k != "annotations"} == {
        k: v for k, v in stored.items() if k != "annotations"
    }
    assert len(ours["annotations"]) == len(stored["annotations"]) > 0
    for got, want in zip(ours["annotations"], stored["annotations"], strict=True):
        numbers = ("bbox", "score", "area", "attributes")
        assert {k: v for k, v in got.items() if k not in numbers} == {
            k: v for k, v in want.items() if k not in numbers
        }
        assert got["bbox"] == pytest.approx(want["bbox"], abs=0.011)
        assert got["score"] == pytest.approx(want["score"], abs=1.1e-4)
        assert got["attributes"] == {"phrase": want["attributes"]["phrase"], "score": got["score"]}
