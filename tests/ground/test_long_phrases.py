from __future__ import annotations

import json

from vgtool.ground.pipeline import GroundConfig, ground


def test_phrases_beyond_max_length_are_truncated_with_a_warning(
    image_folder, tiny_checkpoint, tmp_path, capfd
):
    long_phrase = "the small red circle left of the " + "very " * 60 + "large blue square"
    phrases = [long_phrase, "café crème", "dog"]
    config = GroundConfig(threshold=0.0, top_k=1, quiet=True, num_workers=0, crops=True, overlays=False)
    ground([image_folder], phrases, out_dir=tmp_path / "out", model=tiny_checkpoint, config=config)
    err = capfd.readouterr().err
    assert "tokens; truncated" in err and err.count("truncated") == 1
    document = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert {a["phrase"] for a in document["annotations"]} == set(
        phrases
    )  # the full phrase is kept in the output
    crop_folders = {p.name for p in (tmp_path / "out" / "crops").iterdir()}
    assert len(crop_folders) == 3 and all(len(name.encode()) <= 90 for name in crop_folders)
