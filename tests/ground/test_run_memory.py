"""A run's own bookkeeping holds positions into the image list, not an object per image.

On 20,000 listed images with a half-finished sharded journal, what a resume works out before it
grounds (shared stems, the journal scan, the images left, the dataset over them) and the assembly
of ``annotations.json`` cost a few bytes per image (``tracemalloc``); and each of them gives what
the straightforward version, with a dictionary or set of names, gives.
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from pathlib import Path

import pytest

from vgtool.data.image_dataset import ImageFileDataset
from vgtool.data.image_list import ImageEntry, ImageList
from vgtool.data.listing import list_images
from vgtool.ground import shared_stems
from vgtool.ground.output_dir import RunState
from vgtool.ground.phrases import build_ontology
from vgtool.ground.resume import scan_journal
from vgtool.ground.shard import Shard
from vgtool.ground.shared_stems import find_shared_stems
from vgtool.writers.assemble import _records_in_order, assemble_annotations
from vgtool.writers.journal import Journal
from vgtool.writers.run_folder import journal_paths

BIG = 20_000
FOLDERS = ("a", "a/b", "b", "c.d")
SHARD = Shard(rank=1, world_size=2)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _record(position: int, file_name: str, boxes: int, *, local: bool) -> dict:
    annotations = [
        {"id": 1 + j, "image_id": position + 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
        for j in range(boxes)
    ]
    record = {"image_id": position + 1, "file_name": file_name, "width": 8, "height": 6}
    return {**record, "annotations": annotations, **({"local_ids": True} if local else {})}


# ---- the references: what the run did with names in dictionaries and sets ---------------------


def reference_shared_stems(entries) -> tuple[tuple[str, str], int] | None:
    seen: dict[str, str] = {}
    pairs = []
    for entry in entries:
        name = entry.file_name
        stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
        if stem.casefold() in seen:
            pairs.append((seen[stem.casefold()], name))
        else:
            seen[stem.casefold()] = name
    return (pairs[0], len(pairs)) if pairs else None


def reference_scan(records: list[dict], entries, owns) -> dict:
    by_name = {e.file_name: e for i, e in enumerate(entries) if owns is None or owns(i)}
    done: set[str] = set()
    skipped, repairs, last_id = [], [], 0
    for rec in records:
        name = rec["file_name"]
        if name in done:
            continue
        done.add(name)
        if "skipped" in rec:
            skipped.append({"file": name, "reason": rec["skipped"]})
            continue
        last_id = max([last_id, *(a["id"] for a in rec["annotations"])])
        if name in by_name:  # every output counts as missing
            repairs.append((by_name[name], rec["annotations"], not rec.get("local_ids")))
    todo = [i for i, e in enumerate(entries) if e.file_name not in done and (owns is None or owns(i))]
    resumed = sum(e.file_name in done for e in entries)
    return {"todo": todo, "resumed": resumed, "skipped": skipped, "repairs": repairs, "last": last_id}


def reference_assembly_order(paths: list[Path]) -> list[tuple[int, int]]:
    order: dict[int, tuple[int, int]] = {}
    for index, path in enumerate(paths):
        offset = 0
        for line in path.read_bytes().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            order.setdefault(json.loads(line)["image_id"], (index, offset))
            offset += len(line)
    return [order[image_id] for image_id in sorted(order)]


# ---- twenty thousand images ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> tuple[ImageList, RunState]:
    """BIG listed images (one stem shared, by ``a/img_000000``), and a run folder whose two rank
    journals hold three images in four, with a box on every tenth and a few skipped."""
    root = tmp_path_factory.mktemp("big")
    for i in range(BIG):
        _touch(root / "images" / FOLDERS[i % len(FOLDERS)] / f"img_{i:06d}.jpg")
    _touch(root / "images" / "a" / "img_000000.png")
    entries = list_images([root / "images"], recursive=True)
    out = root / "out"
    state = RunState(out, out / "journal.jsonl", build_ontology(["circle"]), run_key={})
    (out / "journal.jsonl").parent.mkdir(parents=True)
    (out / "journal.jsonl").touch()
    with (
        Journal(out / "journal.rank0-of-2.jsonl") as rank0,
        Journal(out / "journal.rank1-of-2.jsonl") as rank1,
    ):
        for position, file_name in enumerate(entries.file_names()):
            if position % 4 == 3:
                continue
            journal = rank0 if position % 2 == 0 else rank1
            if position % 997 == 5:
                journal.append({"image_id": position + 1, "file_name": file_name, "skipped": "unreadable"})
            else:
                journal.append(_record(position, file_name, int(position % 10 == 0), local=True))
    return entries, state


def test_the_bookkeeping_of_a_resume_costs_a_few_bytes_per_image(big_run):
    entries, state = big_run
    out = state.out_dir
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        shared = find_shared_stems(entries)
        scan = scan_journal(state, entries, crops=True, overlays=False, owns=SHARD.owns)
        todo = scan.todo(SHARD)
        dataset = ImageFileDataset(entries.take(todo), transform=lambda image: image, keep_images=False)
        held, peak = (m - before for m in tracemalloc.get_traced_memory())
        tracemalloc.reset_peak()
        annotations = assemble_annotations(
            journal_paths(out), out / "annotations.json", info={}, categories=[], results_path=out / "r.json"
        )
        assembly_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    count = len(entries)
    assert count == BIG + 1 and shared is not None and shared.pairs == 1
    left = range(3, count, 4)  # all odd: rank 1's
    assert len(dataset) == len(todo) == len(left) and scan.resumed == count - len(left)
    assert annotations == sum(p % 997 != 5 for p in range(0, count, 10))
    # a set of names alone was 60-130 bytes per image, the images left as (i, entry) pairs 550
    assert held / count <= 8, f"{held / count:.1f} bytes per image held"
    assert peak / count <= 40, f"{peak / count:.1f} bytes per image at the peak"
    assert assembly_peak / count <= 80, f"{assembly_peak / count:.1f} bytes per image at the peak"


def test_the_scan_and_assembly_are_those_of_names_in_sets(big_run):
    entries, state = big_run
    paths = journal_paths(state.out_dir)
    records = [json.loads(line) for path in paths for line in path.read_bytes().splitlines()]
    expected = reference_scan(records, entries, SHARD.owns)
    scan = scan_journal(state, entries, crops=True, overlays=False, owns=SHARD.owns)
    assert scan.todo(SHARD).tolist() == expected["todo"] and scan.resumed == expected["resumed"]
    assert scan.skipped == expected["skipped"] and scan.last_annotation_id == expected["last"]
    assert scan.local_ids and list(scan.repairs(state, entries)) == []  # image-local ids: checked later
    at_journal, at_offset = _records_in_order(paths)
    assert list(zip(at_journal.tolist(), at_offset.tolist(), strict=True)) == reference_assembly_order(paths)


# ---- small cases against the references ---------------------------------------------------------


def _entries(names: list[str]) -> list[ImageEntry]:
    return [ImageEntry(path=Path("/data") / name, file_name=name) for name in names]


STEM_CASES = [
    ["a.jpg", "b.jpg"],
    ["a.jpg", "a.png"],
    ["x/a.JPG", "x/A.png", "x/a.tif", "y/a.png", "z/b", "z/b.png", "z/c.d/e", "z/c.d/e.png"],
    ["B.png", "a.png", "b.jpg", "A.jpg", "c", "c.", "c.x.y", "c.x.z", ".hidden", ".hidden.png"],
    ["Straße.jpg", "STRASSE.png", "ǅ.jpg", "ǆ.png"],
]


@pytest.mark.parametrize("colliding", [False, True], ids=["hash", "one-hash-for-all"])
@pytest.mark.parametrize("names", STEM_CASES)
def test_shared_stems_are_those_of_a_dictionary_of_stems(names, colliding, monkeypatch):
    if colliding:  # every stem the same hash: only the stems themselves tell them apart
        monkeypatch.setattr(shared_stems, "hash", lambda key: 7, raising=False)
    for order in (names, sorted(names), names[::-1]):
        shared = find_shared_stems(ImageList.from_entries(_entries(order)))
        expected = reference_shared_stems(_entries(order))
        assert (None if shared is None else (shared.first, shared.pairs)) == expected


def test_the_scan_finds_images_whose_positions_moved(tmp_path):
    """Images added and removed since the journal was written: its image ids point elsewhere;
    repeats of listed and unlisted names, and skipped images, are counted once."""
    old = [f"img{i:02d}.jpg" for i in range(0, 30, 2)]
    new = sorted([*old[3:], "img00a.jpg", "img03.jpg", "img05.jpg"])
    entries = ImageList.from_entries(_entries(new))
    out = tmp_path / "out"
    state = RunState(out, out / "journal.jsonl", build_ontology(["circle"]), run_key={})
    records = [_record(i, name, i % 3, local=False) for i, name in enumerate(old)]
    records[4] = {"image_id": 5, "file_name": old[4], "skipped": "unreadable"}
    records += [records[1], records[6], _record(40, "img05.jpg", 1, local=False), records[4]]
    with Journal(out / "journal.jsonl") as journal:
        for record in records:
            journal.append(record)
    shard = Shard(rank=0, world_size=3)
    for owns in (None, shard.owns):
        scan = scan_journal(state, entries, crops=True, overlays=False, owns=owns)
        expected = reference_scan(records, entries, owns)
        assert scan.todo(shard if owns else Shard()).tolist() == expected["todo"]
        assert scan.resumed == expected["resumed"] and scan.skipped == expected["skipped"]
        assert scan.last_annotation_id == expected["last"]
        crops_missing = [r for r in expected["repairs"] if r[1]]  # an image without boxes has none
        assert list(scan.repairs(state, entries)) == crops_missing


def test_assembly_keeps_the_first_record_of_each_image_in_id_order(tmp_path):
    rng = random.Random(3)
    paths = [tmp_path / f"journal.rank{r}-of-3.jsonl" for r in range(3)]
    for path in paths:
        with Journal(path) as journal:
            for image_id in rng.sample(range(1, 60), 30):
                journal.append(_record(image_id - 1, f"{image_id}.png", rng.randrange(3), local=True))
    paths[1].write_bytes(paths[1].read_bytes() + b'{"image_id":7,"cut')  # a last line cut short
    at_journal, at_offset = _records_in_order(paths)
    assert list(zip(at_journal.tolist(), at_offset.tolist(), strict=True)) == reference_assembly_order(paths)


def test_images_to_repair_cost_two_bytes_each_until_they_are_repaired(big_run):
    """Every grounded image lost its overlay (a deleted ``overlays/``): the scan keeps a flag per
    image, not the records; the repairs are read again, one record at a time, when made."""
    entries, state = big_run
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        scan = scan_journal(state, entries, crops=False, overlays=True, owns=SHARD.owns)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    records = [
        json.loads(line) for path in journal_paths(state.out_dir) for line in path.read_bytes().splitlines()
    ]
    expected = [
        (entry, annotations)
        for entry, annotations, _ in reference_scan(records, entries, SHARD.owns)["repairs"]
    ]
    assert scan.repaired == len(expected) > BIG // 5
    assert [(entry, annotations) for entry, annotations, _ in scan.repairs(state, entries)] == expected
    assert held / len(entries) <= 8, f"{held / len(entries):.1f} bytes per image held"
