"""Interrupted runs: a real ``vgtool ground`` process killed mid-run resumes to the same outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vgtool.cli.main import app
from vgtool.errors import InputError
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.writers.crops import crop_path
from vgtool.writers.overlays import overlay_path

NUM_IMAGES = 120
PHRASES = ["red car", "dog"]
KILL_AFTER_LINES = 3
START_TIMEOUT_S = 60.0


def _command(folder: Path, checkpoint: Path, out: Path, workers: int = 0) -> list[str]:
    phrases = [arg for phrase in PHRASES for arg in ("-p", phrase)]
    return [
        sys.executable, "-m", "vgtool", "ground", str(folder), *phrases, "--model", str(checkpoint),
        "--out", str(out), "--threshold", "0", "--batch-size", "4", "--workers", str(workers),
    ]  # fmt: skip


def _journal_lines(out: Path) -> int:
    try:
        return (out / "journal.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _check_complete(out: Path, names: list[str]) -> None:
    """One image record per input, ids without gaps or repeats, every implied crop and overlay."""
    document = json.loads((out / "annotations.json").read_text())
    assert sorted(img["file_name"] for img in document["images"]) == names
    assert [img["id"] for img in document["images"]] == list(range(1, len(names) + 1))
    ids = [ann["id"] for ann in document["annotations"]]
    assert ids == list(range(1, len(ids) + 1)) and ids
    categories = {c["id"]: c["name"] for c in document["categories"]}
    images = {img["id"]: img["file_name"] for img in document["images"]}
    for file_name in images.values():
        assert overlay_path(out, file_name).is_file(), file_name
    for ann in document["annotations"]:
        path = crop_path(out, categories[ann["category_id"]], images[ann["image_id"]], ann["id"])
        assert path.is_file(), path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_checkpoint) -> tuple[Path, Path]:
    """(image folder, uninterrupted output folder), shared by the kill tests."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    reference = tmp_path_factory.mktemp("reference") / "out"
    config = GroundConfig(threshold=0.0, batch_size=4, num_workers=0, quiet=True)  # as _command
    ground([folder], PHRASES, out_dir=reference, model=tiny_checkpoint, config=config)
    return folder, reference


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "sigkill"]
)
def test_killed_run_resumes_to_identical_outputs(corpus, tiny_checkpoint, tmp_path, sig):
    """SIGTERM goes to the whole process group, decoding workers included, as a scheduler sends it."""
    folder, reference = corpus
    out = tmp_path / "out"
    group = sig == signal.SIGTERM
    command = _command(folder, tiny_checkpoint, out, workers=2 if group else 0)
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=group)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while _journal_lines(out) < KILL_AFTER_LINES and process.poll() is None:
                assert time.monotonic() < deadline, "no journal lines in time"
                time.sleep(0.01)
            assert process.poll() is None, "the run finished before the kill; use more images"
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    message = (tmp_path / "stderr.txt").read_text(errors="replace")
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM unwinds as Ctrl-C does
        stopped = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]
        assert code == 128 + sig, message
        assert "Traceback" not in message and message.strip().splitlines()[-1].startswith(stopped), message
    else:
        assert code == -signal.SIGKILL
    kept = _journal_lines(out)
    assert 0 < kept < NUM_IMAGES
    assert not (out / "annotations.json").exists()

    subprocess.run([*command, "--resume"], check=True, capture_output=True)

    assert (out / "annotations.json").read_bytes() == (reference / "annotations.json").read_bytes()
    _check_complete(out, sorted(p.name for p in folder.iterdir()))
    assert json.loads((out / "run.json").read_text())["counts"]["already_done"] == kept


def test_lost_crops_and_overlays_are_rewritten_on_resume(image_folder, tmp_path, tiny_checkpoint):
    config = GroundConfig(threshold=0.0, quiet=True, recursive=True, num_workers=0)
    out = tmp_path / "out"
    ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    overlay = overlay_path(out, "sub/deep.png")
    crops = sorted((out / "crops").rglob("img1_*.jpg"))
    assert crops
    for path in [overlay, *crops]:
        path.unlink()
    again = ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    assert again.grounded == 0 and again.repaired == 2
    assert overlay.is_file() and all(path.is_file() for path in crops)
    assert ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config).repaired == 0


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["-p", "dog", "--resume"], "no earlier run to resume"),
        ("run", ["-p", "cat", "--resume"], "different phrases$"),
        ("run", ["-p", "dog", "--threshold", "0.9", "--resume"], "different postprocess$"),
        ("none", ["-p", "dog", "--resume", "--overwrite"], "--resume and --overwrite"),
        ("run", ["-p", "dog", "--resume", "--overwrite"], "--resume and --overwrite"),
    ],
    ids=["empty-folder", "other-phrases", "other-threshold", "with-overwrite", "with-overwrite-run"],
)
def test_resume_refuses_what_it_cannot_continue(
    image_folder, tmp_path, tiny_checkpoint, setup, args, message
):
    out = tmp_path / "out"
    common = [str(image_folder), "--model", str(tiny_checkpoint), "--out", str(out), "-r", "--quiet"]
    common += ["--workers", "0", "--no-crops", "--no-overlays"]
    if setup == "run":
        assert CliRunner().invoke(app, ["ground", *common, "-p", "dog"]).exit_code == 0
    result = CliRunner().invoke(app, ["ground", *common, *args])
    assert isinstance(result.exception, InputError), result.output
    assert "\n" not in str(result.exception)
    assert re.search(message, str(result.exception)), str(result.exception)


def test_resume_continues_a_run_with_the_same_settings(image_folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    common = ["ground", str(image_folder), "-p", "dog", "--model", str(tiny_checkpoint), "--out", str(out)]
    common += ["-r", "--quiet", "--workers", "0"]
    assert CliRunner().invoke(app, common).exit_code == 0
    before = (out / "annotations.json").read_bytes()
    result = CliRunner().invoke(app, [*common, "--resume"])
    assert result.exit_code == 0, result.output
    assert (out / "annotations.json").read_bytes() == before


def test_failed_assembly_keeps_the_previous_annotations(image_folder, tmp_path, tiny_checkpoint, monkeypatch):
    import vgtool.writers.assemble as assemble

    config = GroundConfig(
        threshold=0.0, quiet=True, recursive=True, num_workers=0, crops=False, overlays=False
    )
    out = tmp_path / "out"
    ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    before = (out / "annotations.json").read_bytes()
    iter_records = assemble._iter_records

    def failing_records(state):
        for i, record in enumerate(iter_records(state)):
            if i == 2:
                raise OSError("disk full")
            yield record

    monkeypatch.setattr(assemble, "_iter_records", failing_records)
    with pytest.raises(OSError, match="disk full"):
        ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    assert (out / "annotations.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_a_resume_removes_the_temporaries_a_killed_run_left(image_folder, tmp_path, tiny_checkpoint):
    """A kill mid-write leaves ``.<name>.<pid>-<thread>.tmp`` beside the crops and overlays; the
    resume (folder locked, nothing else writing) deletes them and nothing else."""
    out = tmp_path / "out"
    assert subprocess.run(_command(image_folder, tiny_checkpoint, out), capture_output=True).returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    crop_folder = next(p for p in (out / "crops").iterdir() if p.is_dir())
    stale = [crop_folder / ".x_1.jpg.4242-1.tmp", out / "overlays" / "sub" / ".deep.png.jpg.4242-2.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    assert subprocess.run(_command(image_folder, tiny_checkpoint, out), capture_output=True).returncode == 0
    assert not any(path.exists() for path in stale)
    after = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert after == before


def test_a_resume_with_nothing_left_never_loads_the_model(
    image_folder, tmp_path, tiny_checkpoint, monkeypatch
):
    """The run key needs the model's identity and threshold, which its files give; the weights are
    loaded only when the journal shows images left. Lost crops are rewritten without the model."""
    import vgtool.ground.pipeline as pipeline

    config = GroundConfig(threshold=None, quiet=True, recursive=True, num_workers=0)
    out = tmp_path / "out"
    first = ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    before = (out / "annotations.json").read_bytes()
    crops = sorted((out / "crops").rglob("*.jpg"))
    assert first.grounded > 0 and crops
    crops[0].unlink()
    loads = []
    load_grounder = pipeline.load_grounder
    monkeypatch.setattr(pipeline, "load_grounder", lambda *a, **k: loads.append(a) or load_grounder(*a, **k))

    again = ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    assert loads == [] and again.grounded == 0 and again.repaired == 1 and crops[0].is_file()
    assert (out / "annotations.json").read_bytes() == before
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["arguments"]["model_loaded"] is False
    assert manifest["model"]["path"] == str(tiny_checkpoint)

    (out / "journal.jsonl").write_text("".join((out / "journal.jsonl").read_text().splitlines(True)[:-1]))
    third = ground([image_folder], PHRASES, out_dir=out, model=tiny_checkpoint, config=config)
    assert len(loads) == 1 and third.grounded == 1
    assert (out / "annotations.json").read_bytes() == before
    assert "model_loaded" not in json.loads((out / "run.json").read_text())["arguments"]
