"""Nothing a user hands in (phrases, file names, symlinks) makes vgtool write outside --out."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from vgtool.ground.pipeline import GroundConfig, ground

HOSTILE_PHRASES = ["../../x", "a/b\\c=../../escape", "nul\x00byte", "x" * 300, "/etc/passwd", ".."]


def _snapshot(root):
    return set(root.rglob("*"))


def test_hostile_phrases_and_symlinks_stay_inside_out(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    outside = tmp_path / "outside"
    images.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(outside / "elsewhere.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / "here.png")
    os.symlink(outside, images / "linked_dir")
    os.symlink(outside / "elsewhere.png", images / "linked_file.png")
    out = tmp_path / "work" / "out"
    before = _snapshot(tmp_path)
    config = GroundConfig(threshold=0.0, top_k=1, recursive=True, quiet=True, num_workers=0)
    summary = ground([images], HOSTILE_PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    assert summary.grounded == 3 and not summary.skipped
    after = _snapshot(tmp_path)
    created = {p for p in after - before if not p.is_relative_to(out.parent)}
    assert created == set(), created  # nothing new outside the output folder
    real_out = out.resolve()
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(real_out), path
        assert not path.is_symlink(), path
    document = json.loads((out / "annotations.json").read_text())
    assert {a["phrase"] for a in document["annotations"]} == {
        "../../x",
        "a/b\\c",
        "nul\x00byte",
        "x" * 300,
        "/etc/passwd",
        "..",
    }
    assert len(list((out / "crops").iterdir())) == 6  # one sanitised folder per category
