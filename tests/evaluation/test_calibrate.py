from __future__ import annotations

import numpy as np
import pytest

from vgtool.checkpoint import (
    FALLBACK_THRESHOLD,
    model_threshold,
    read_checkpoint_config,
    save_checkpoint,
)
from vgtool.evaluation.calibrate import lowest_threshold
from vgtool.grounders import load_grounder


def test_lowest_threshold_meets_the_rate_on_the_grid():
    scores = [0.9, 0.8, 0.72, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0]
    assert lowest_threshold(scores, 0.1) == 0.81  # only 0.9 may stay above: 1 of 10
    assert lowest_threshold(scores, 0.3) == 0.31  # 0.9, 0.8 and 0.72: 3 of 10
    assert lowest_threshold(scores, 1.0) == 0.05
    assert lowest_threshold([1.0, 1.0], 0.0) == 0.99  # cannot be met: the highest threshold
    with pytest.raises(ValueError, match="no phrases"):
        lowest_threshold([], 0.1)


def test_upper_bound_matches_known_clopper_pearson_values():
    from vgtool.evaluation.calibrate import upper_rate_bound

    assert upper_rate_bound(0, 10, 0.95) == pytest.approx(1 - 0.05 ** (1 / 10))  # closed form at 0 hits
    assert upper_rate_bound(5, 100, 0.95) == pytest.approx(0.1023, abs=5e-4)
    assert upper_rate_bound(3, 10, 0.0) == 0.3 and upper_rate_bound(10, 10, 0.95) == 1.0


def test_confidence_makes_the_threshold_stricter_by_the_sampling_margin():
    from vgtool.evaluation.calibrate import upper_rate_bound

    scores = np.random.default_rng(0).uniform(0, 1, 600)
    plain, bounded = lowest_threshold(scores, 0.1), lowest_threshold(scores, 0.1, confidence=0.95)
    assert (scores >= plain).mean() <= 0.1 < (scores >= plain - 0.01).mean()

    def bound(threshold):
        return upper_rate_bound(int((scores >= threshold).sum()), len(scores), 0.95)

    assert bounded > plain and bound(bounded) <= 0.1 < bound(bounded - 0.01)
    assert (scores >= bounded).mean() < 0.085  # the bound is about 2 points above the rate


def test_threshold_is_stored_by_export_and_used_by_ground(tiny_checkpoint, tmp_path, image_folder):
    from vgtool.checkpoint import export_checkpoint
    from vgtool.ground.pipeline import GroundConfig, ground

    assert model_threshold(tiny_checkpoint) == FALLBACK_THRESHOLD
    export_checkpoint(tiny_checkpoint, tmp_path / "calibrated", postprocess={"threshold": 0.0})
    assert model_threshold(tmp_path / "calibrated") == 0.0
    _, document = read_checkpoint_config(tmp_path / "calibrated")
    assert document["meta"]["postprocess"] == {"threshold": 0.0}

    config = GroundConfig(device="cpu", crops=False, overlays=False, quiet=True, recursive=True)
    summary = ground(
        [image_folder], ["a dog"], out_dir=tmp_path / "a", model=tmp_path / "calibrated", config=config
    )
    # Threshold 0 keeps every box NMS leaves: at least one per image (the tiny model's scores are > 0).
    assert summary.annotations >= summary.grounded == 5
    explicit = GroundConfig(
        device="cpu", crops=False, overlays=False, quiet=True, recursive=True, threshold=1.0
    )
    summary = ground(
        [image_folder], ["a dog"], out_dir=tmp_path / "b", model=tmp_path / "calibrated", config=explicit
    )
    assert summary.annotations == 0  # --threshold wins over the model's


def test_calibrate_picks_a_threshold_from_no_object_phrases(tiny_checkpoint, tmp_path):
    from tests.conftest import random_image
    from vgtool.datasets.sample import GroundingSample
    from vgtool.evaluation.calibrate import GRID, calibrate

    samples = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        random_image(64, 48, seed=i).save(path)
        samples.append(
            GroundingSample(
                image_path=path, phrase="a dog", boxes_xyxy=np.zeros((0, 4), np.float32), image_id=i
            )
        )
    grounder = load_grounder(tiny_checkpoint, device="cpu")
    result = calibrate(grounder, samples, max_no_object_fp=1 / 3, quiet=True)
    assert result["n_no_object"] == 3
    assert result["threshold"] in GRID
    assert result["no_object_fp_rate"] <= result["no_object_fp_bound"]
    assert result["no_object_fp_bound"] <= 1 / 3 or result["threshold"] == GRID[-1]
    save_checkpoint(grounder.net, tmp_path / "ckpt", extra={"postprocess": result})
    assert model_threshold(tmp_path / "ckpt") == result["threshold"]


def test_a_single_box_model_is_not_calibrated(tmp_path):
    """Its score is a confidence, never "not there": a no-object threshold would only drop boxes."""
    from vgtool.checkpoint import init_checkpoint
    from vgtool.errors import InputError
    from vgtool.evaluation.calibrate import calibrate

    grounder = load_grounder(init_checkpoint("textquery-tiny", tmp_path / "tq"), device="cpu")
    assert grounder.default_threshold == 0.0
    with pytest.raises(InputError, match="exactly one box"):
        calibrate(grounder, [], quiet=True)
