from __future__ import annotations

import json

from vgtool.bench import bench


def test_bench_reports_every_figure(tiny_checkpoint, tmp_path):
    report = bench(
        model=tiny_checkpoint,
        synthetic=6,
        phrases=2,
        device="cpu",
        batch_size=2,
        out_json=tmp_path / "b.json",
        memory_scaling=(2, 5),
        quiet=True,
    )
    assert json.loads((tmp_path / "b.json").read_text()) == report
    assert report["images"] == 6 and report["phrases"] == 2
    for key in ("model_only_images_per_s", "end_to_end_images_per_s", "ratio", "phrase_scaling_16_over_1"):
        assert report[key] > 0, key
    assert set(report["phrase_scaling_s_per_image"]) == {"1", "4", "16"}
    for stage in ("wait_for_data", "backbone", "text", "decoder", "postprocess", "writing_busy", "assemble"):
        assert stage in report["stages_s"], stage
    assert report["peak_rss_mib"]["main"] > 0
    scaling = report["memory_scaling"]
    assert set(scaling["peak_rss_mib"]) == {"2", "5"}
    for run in scaling["peak_rss_mib"].values():
        assert run["main"] > 50  # a process that imported torch and ran the model
    assert scaling["growth_main"] == round(
        scaling["peak_rss_mib"]["5"]["main"] / scaling["peak_rss_mib"]["2"]["main"] - 1, 4
    )
