"""``vgtool bench``: the stages timed alone, end to end, and how the figures hang together."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from vgtool.bench import STAGES, _first_image_size, load_runtime_grounder
from vgtool.cli.bench import _runtimes
from vgtool.cli.main import app
from vgtool.errors import InputError

RATES = ("decode_only", "model_only", "writing_only", "end_to_end")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, str]:
    """One bench of the bundled model over 6 synthetic images on torch and ONNX Runtime: its JSON
    report and printed output."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    argv = ["bench", "--synthetic", "6", "--phrases", "2", "--device", "cpu", "-b", "2", "--repeats", "2"]
    argv += ["--runtime", "torch,onnx"]
    result = CliRunner().invoke(app, [*argv, "--memory-scaling", "2,5", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_bench_reports_every_figure(run):
    report, _ = run
    assert report["images"] == 6 and report["phrases"] == 2 and report["repeats"] == 2
    assert report["batch_size"] == 2 and report["cpu_count"] >= 1 and report["num_workers"] >= 0
    for key in (*(f"{name}_images_per_s" for name in RATES), "stages_in_series_images_per_s"):
        assert report[key] > 0, key
    for key in ("end_to_end_vs_slowest", "ratio", "phrase_scaling_16_over_1"):
        assert report[key] > 0, key
    assert set(report["phrase_scaling_s_per_image"]) == {"1", "4", "16"}
    for stage in ("wait_for_data", "backbone", "text", "decoder", "postprocess", "writing_busy", "assemble"):
        assert stage in report["stages_s"], stage
    assert report["peak_rss_mib"]["main"] > 0
    scaling = report["memory_scaling"]
    assert set(scaling["peak_rss_mib"]) == {"2", "5"}
    for peak in scaling["peak_rss_mib"].values():
        assert peak["main"] > 50  # a process that imported torch and ran the model
    assert scaling["growth_main"] == round(
        scaling["peak_rss_mib"]["5"]["main"] / scaling["peak_rss_mib"]["2"]["main"] - 1, 4
    )


def test_the_figures_agree_with_each_other(run):
    report, _ = run
    rates = {name: report[f"{name}_images_per_s"] for name in STAGES}
    assert report["slowest_stage"] == min(rates, key=rates.get)
    slowest = rates[report["slowest_stage"]]
    assert report["end_to_end_vs_slowest"] == pytest.approx(
        report["end_to_end_images_per_s"] / slowest, rel=0.01
    )
    assert report["ratio"] == pytest.approx(
        report["end_to_end_images_per_s"] / report["model_only_images_per_s"], rel=0.01
    )
    in_series = 1 / sum(1 / rate for rate in rates.values())
    assert report["stages_in_series_images_per_s"] == pytest.approx(in_series, rel=0.01)
    for name in RATES:  # each figure is the best of its rounds
        rounds = report["per_round_images_per_s"][name]
        assert len(rounds) == 2 and max(rounds) == report[f"{name}_images_per_s"], name


def test_writing_only_writes_what_the_end_to_end_run_writes(run):
    report, _ = run
    assert report["writing_only_images"] == report["images"]
    written = report["written"]
    assert written["writing_only"] == written["end_to_end"]
    assert written["end_to_end"]["overlays"] == report["images"]


def test_the_top_level_figures_are_the_first_runtimes(run):
    report, _ = run
    assert report["runtime"] == "torch" and list(report["runtimes"]) == ["torch", "onnx"]
    for key, value in report["runtimes"]["torch"].items():
        assert report[key] == value, key


def test_the_printed_table_puts_the_stages_side_by_side(run):
    report, output = run
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("images/s"))
    header, row = lines[at : at + 2]
    assert header.split()[:6] == ["images/s", "decode", "model", "writing", "in", "series"]
    assert row.split()[0] == "torch"
    assert f"{report['end_to_end_vs_slowest']:.2f}" in row.split()


def test_runtimes_are_a_comma_list():
    assert _runtimes("torch") == ("torch",)
    assert _runtimes("torch, onnx,torch") == ("torch", "onnx")
    with pytest.raises(typer.BadParameter):
        _runtimes(" , ")


def test_both_runtimes_are_reported_with_the_same_fields_and_outputs(run):
    report, output = run
    torch_report, onnx_report = report["runtimes"]["torch"], report["runtimes"]["onnx"]
    assert set(onnx_report) == set(torch_report)
    for stage in RATES:
        assert onnx_report[f"{stage}_images_per_s"] > 0
    # the same model on either runtime writes the same number of boxes, crops and overlays
    assert onnx_report["written"] == torch_report["written"]
    assert "onnx" in output


def test_a_runtime_that_is_not_known_is_refused():
    with pytest.raises(InputError, match="'no-such-runtime' is not one of torch, onnx"):
        load_runtime_grounder(None, "no-such-runtime", device="cpu")
    with pytest.raises(typer.BadParameter, match="runtimes are torch and onnx"):
        _runtimes("torch,tensorrt")


def test_model_only_inputs_take_the_size_of_the_first_image_that_decodes(tmp_path):
    """As displayed (EXIF applied); unreadable files are passed over."""
    from PIL import Image

    from vgtool.data.listing import list_images

    (tmp_path / "a.jpg").write_bytes(b"not an image")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: 50 x 30 stored, 30 x 50 displayed
    Image.new("RGB", (50, 30)).save(tmp_path / "b.jpg", exif=exif)
    Image.new("RGB", (70, 20)).save(tmp_path / "c.png")
    assert _first_image_size(list_images([tmp_path])) == (30, 50)
    assert _first_image_size([]) == (640, 480)
