"""Sharded grounding under torchrun: two gloo ranks on CPU write what one process writes, byte for
byte; a rank that stopped early, or was killed while it ran, is finished by a resume in one process
or under another world size; ranks share the lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vgtool.errors import OutputLocked
from vgtool.ground.folder_lock import OutputLock, check_unlocked
from vgtool.ground.shard import Shard, shard_from_env
from vgtool.writers.assemble import assemble_annotations
from vgtool.writers.journal import Journal
from vgtool.writers.run_folder import PENDING_DIR, journal_paths

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun and flock: POSIX only")
NUM_IMAGES = 7  # odd: the ranks' shares differ
KILLED_IMAGES = 41  # enough that a rank is still grounding when its first line is journaled
TIMEOUT_S = 180
# batch size 1: every image meets the model alone in either run, so the numbers cannot differ
ARGS = ["-p", "circle", "-p", "square=box", "--threshold", "0", "--top-k", "2", "--workers", "0", "-b", "1"]
COMPARED = ("annotations.json", "results.json", "run-key.json")


def _command(images: Path, out: Path, checkpoint: Path, ranks: int = 1) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    launcher = [sys.executable, "-m", "vgtool"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc-per-node", str(ranks), "-m", "vgtool"]
    command = [*launcher, "ground", str(images), *ARGS, "--model", str(checkpoint), "--out", str(out)]
    return command, env


def _ground(images: Path, out: Path, checkpoint: Path, ranks: int = 1) -> None:
    command, env = _command(images, out, checkpoint, ranks)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]


def _lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return []


def _outputs(out: Path) -> dict[str, bytes | None]:
    """The compared documents' bytes, and every crop and overlay by relative path (crop bytes are
    left out: a re-written crop comes from the journal's 0.01-pixel boxes)."""
    files: dict[str, bytes | None] = {name: (out / name).read_bytes() for name in COMPARED}
    for sub in ("crops", "overlays"):
        files.update({str(p.relative_to(out)): None for p in (out / sub).rglob("*") if p.is_file()})
    return files


def _image_folder(folder: Path, count: int) -> Path:
    from tests.conftest import random_image

    folder.mkdir()
    for i in range(count):
        random_image(40, 32, seed=i).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("sharded") / "images", NUM_IMAGES)


@pytest.fixture(scope="module")
def single(images, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    _ground(images, out, tiny_checkpoint)
    return out


@pytest.fixture(scope="module")
def sharded(images, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded_out") / "out"
    _ground(images, out, tiny_checkpoint, ranks=2)
    return out


def test_two_ranks_write_what_one_process_writes(single, sharded):
    assert json.loads((single / "annotations.json").read_text())["annotations"], "no boxes to compare"
    assert _outputs(sharded) == _outputs(single)
    assert [p.name for p in journal_paths(sharded)] == [
        "journal.jsonl",
        "journal.rank0-of-2.jsonl",
        "journal.rank1-of-2.jsonl",
    ]
    assert (sharded / "journal.jsonl").read_bytes() == b""
    assert not (sharded / PENDING_DIR).exists()
    counts = json.loads((sharded / "run.json").read_text())["counts"]
    assert counts["images_listed"] == counts["grounded_this_run"] == NUM_IMAGES


def test_a_rank_that_stopped_early_is_finished_by_one_process(
    single, sharded, tiny_checkpoint, images, tmp_path
):
    """Rank 1 stopped after its first image: its journal holds one line, the run was never
    assembled, and the crops of the images it never reached are gone; one process finishes it."""
    out = tmp_path / "out"
    shutil.copytree(sharded, out)
    rank1 = out / "journal.rank1-of-2.jsonl"
    first, *rest = rank1.read_bytes().splitlines(keepends=True)
    rank1.write_bytes(first)
    for name in ("annotations.json", "results.json", "run.json"):
        (out / name).unlink()
    shutil.rmtree(out / "crops")  # also those of finished images: re-written from the journals
    _ground(images, out, tiny_checkpoint)
    assert _outputs(out) == _outputs(single)
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["grounded_this_run"] == len(rest) and counts["already_done"] == NUM_IMAGES - len(rest)


@pytest.fixture(scope="module")
def more_images(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("killed") / "images", KILLED_IMAGES)


@pytest.fixture(scope="module")
def more_single(more_images, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("more_single") / "out"
    _ground(more_images, out, tiny_checkpoint)
    return out


def _rank_process(launcher: psutil.Process, rank: int) -> psutil.Process | None:
    """The process torchrun started for ``rank``, once it is there."""
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "vgtool" in child.cmdline():
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.fixture(scope="module")
def killed(more_images, tiny_checkpoint, tmp_path_factory) -> Path:
    """The output folder of two ranks, rank 1 killed (SIGKILL) while it grounded, as soon as its
    journal held a line; torchrun then stops rank 0."""
    out = tmp_path_factory.mktemp("killed_out") / "out"
    command, env = _command(more_images, out, tiny_checkpoint, ranks=2)
    log = out.parent / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            launcher = psutil.Process(process.pid)
            rank1 = None
            deadline = time.monotonic() + TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                rank1 = rank1 or _rank_process(launcher, 1)
                if rank1 is not None and any(
                    line.endswith(b"\n") for line in _lines(out / "journal.rank1-of-2.jsonl")
                ):
                    break
                time.sleep(0.01)
            assert process.poll() is None and rank1 is not None, log.read_text(errors="replace")[-4000:]
            rank1.send_signal(signal.SIGKILL)
            code = process.wait(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code != 0, "torchrun reported success although a rank was killed"
    assert not (out / "annotations.json").exists()
    return out


def test_a_rank_killed_while_it_runs_leaves_valid_journals(killed):
    shares = {0: len(range(0, KILLED_IMAGES, 2)), 1: len(range(1, KILLED_IMAGES, 2))}
    for rank, share in shares.items():
        lines = _lines(killed / f"journal.rank{rank}-of-2.jsonl")
        if rank == 0:  # the rank that was stopped, not killed, leaves only whole lines
            assert all(line.endswith(b"\n") for line in lines)
        complete = [json.loads(line) for line in lines if line.endswith(b"\n")]
        assert len(complete) < share or rank == 0, "rank 1 finished before the kill; use more images"
        assert all(record["image_id"] % 2 == (rank + 1) % 2 for record in complete)
        assert all(record.get("local_ids") for record in complete if "skipped" not in record)
    assert _lines(killed / "journal.rank1-of-2.jsonl"), "rank 1 was killed before its first line"


@pytest.mark.parametrize("ranks", [1, 3], ids=["one-process", "three-ranks"])
def test_a_run_whose_rank_was_killed_is_finished_by_a_resume(
    killed, more_single, more_images, tiny_checkpoint, tmp_path, ranks
):
    """One process, or three ranks (a third world size: each rank reads the two ranks' journals),
    finish the run to the bytes of one uninterrupted process."""
    out = tmp_path / "out"
    shutil.copytree(killed, out)
    done = sum(
        line.endswith(b"\n") for rank in (0, 1) for line in _lines(out / f"journal.rank{rank}-of-2.jsonl")
    )
    _ground(more_images, out, tiny_checkpoint, ranks=ranks)
    # every output equal, and no half-written crop or overlay of the killed rank left behind
    assert _outputs(out) == _outputs(more_single)
    assert not (out / PENDING_DIR).exists()
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["already_done"] == done and counts["grounded_this_run"] == KILLED_IMAGES - done
    if ranks == 3:
        assert {p.name for p in journal_paths(out)} >= {f"journal.rank{r}-of-3.jsonl" for r in range(3)}


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_every_image_belongs_to_exactly_one_rank(world_size):
    owners = [[r for r in range(world_size) if Shard(r, world_size).owns(i)] for i in range(20)]
    assert all(len(o) == 1 for o in owners)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Shard()),
        ({"WORLD_SIZE": "1", "RANK": "0"}, Shard()),
        (
            {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29500"},
            Shard(3, 4, 1, "none@n0:29500/4"),
        ),
        (
            {
                "WORLD_SIZE": "2",
                "RANK": "0",
                "TORCHELASTIC_RUN_ID": "job7",
                "MASTER_ADDR": "n0",
                "MASTER_PORT": "1",
            },
            Shard(0, 2, 0, "job7@n0:1/2"),
        ),
    ],
)
def test_the_shard_comes_from_torchruns_environment(env, expected):
    assert shard_from_env(env) == expected
    assert expected.journal_name == (
        f"journal.rank{expected.rank}-of-{expected.world_size}.jsonl" if expected.sharded else None
    )


def test_ranks_of_one_run_share_the_lock_and_keep_others_out(tmp_path):
    out = tmp_path / "out"
    with OutputLock(out, "run-a", shared=True), OutputLock(out, "run-a", shared=True):
        check_unlocked(out, "run-a")
        with pytest.raises(OutputLocked):
            check_unlocked(out)
        with pytest.raises(OutputLocked):
            OutputLock(out).acquire()
        with pytest.raises(OutputLocked):
            OutputLock(out, "run-b", shared=True).acquire()
    with OutputLock(out), pytest.raises(OutputLocked):  # free again once the last rank is gone
        OutputLock(out, "run-a", shared=True).acquire()


def _record(image_id: int, boxes: int, *, local: bool, first_id: int = 1) -> dict:
    annotations = [
        {"id": first_id + j, "image_id": image_id, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
        for j in range(boxes)
    ]
    record = {"image_id": image_id, "file_name": f"{image_id}.png", "width": 4, "height": 4}
    return {**record, "annotations": annotations, **({"local_ids": True} if local else {})}


def test_assembly_numbers_annotations_in_image_order_whichever_journal_holds_them(tmp_path):
    with (
        Journal(tmp_path / "journal.rank0-of-2.jsonl") as rank0,
        Journal(tmp_path / "journal.rank1-of-2.jsonl") as rank1,
    ):
        rank1.append(_record(2, 2, local=True))
        rank0.append(_record(3, 1, local=True))
        rank0.append(_record(1, 3, local=True))
        rank1.append({"image_id": 4, "file_name": "4.png", "skipped": "unreadable"})
        rank1.append(_record(1, 1, local=True))  # a later record of image 1: the first one wins
    out = tmp_path / "annotations.json"
    count = assemble_annotations(journal_paths(tmp_path), out, info={}, categories=[])
    coco = json.loads(out.read_text())
    assert count == 6
    assert [(a["id"], a["image_id"]) for a in coco["annotations"]] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 2),
        (5, 2),
        (6, 3),
    ]
    assert [i["id"] for i in coco["images"]] == [1, 2, 3]
