"""Peak memory of a real ``vgtool ground`` process that resumes a finished run over a large tree.

For each image count, makes a tree of empty files (see ``listing_memory.make_tree``) and an output
folder whose journal already records every image as done, then runs
``python -m vgtool ground TREE -r -p circle --out OUT --no-overlays --workers 0 -q`` in a fresh
process. That run has nothing to ground, but it does everything else a resume does: it lists the
tree, loads the bundled model, scans the journal, works out which images are left, checks that
the crops of finished images exist, and assembles ``annotations.json`` and ``results.json``.

The output folder is made with the code under test: a one-image run writes its ``run-key.json``,
then its journal is replaced by one record per image of the tree (``image_id`` = position + 1, a
640x480 size, and one box on every ``--boxes-every``-th image, whose crop is created as an empty
file). Overlays are off so that no overlay file per image is needed. With ``--journals N`` the
records are spread over the journals of N ranks (``journal.rank<r>-of-<N>.jsonl``, image-local
annotation ids), as a sharded run leaves them: the resume then also sorts the records of the
journals by image id and checks the crops' final names, and writes the same bytes.

Prints one JSON line per count: ``peak_rss_mib`` of the ``vgtool ground`` process (``ru_maxrss``
from ``wait4``: the interpreter, torch and the model included, so compare counts with each other),
``seconds``, the counts from ``run.json`` and the SHA-256 (first 16 hex digits) of
``annotations.json`` and ``results.json``, to compare two versions of the code byte for byte.

    python benchmarks/run_memory.py --folders 1000 --files 1000 --small 200
    python benchmarks/run_memory.py --source /tmp/old --scratch /tmp/vg-run-memory --keep
    python benchmarks/run_memory.py --scratch /tmp/vg-run-memory --keep --journals 2

``--source`` runs the ``vgtool`` package of another checkout (a ``git worktree`` of an older
commit); ``--scratch`` with ``--keep`` keeps the trees for the next invocation (making a million
files takes minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listing_memory import make_tree

PHRASE = "circle"
GROUND_ARGS = ["-r", "-p", PHRASE, "--no-overlays", "--workers", "0", "-q"]


def _environment(source: Path | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return env


def _tree(root: Path, folders: int, files: int) -> Path:
    """The tree of ``folders`` x ``files`` empty files, made unless a finished one is there."""
    marker = root / ".complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        make_tree(root, folders, files)
        marker.touch()
    return root


def _journal_line(record: dict) -> bytes:
    """A record as ``vgtool.writers.journal.Journal`` writes it."""
    return (json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _crop_path(out: Path, file_name: str, annotation_id: int) -> Path:
    """``vgtool.writers.crops.crop_path`` for the names ``make_tree`` makes (plain ASCII stems)."""
    return out / "crops" / PHRASE / f"{Path(file_name).stem}_{annotation_id}.jpg"


def _finished_run(
    out: Path, folders: int, files: int, boxes_every: int, journals: int, seed: Path, env: dict[str, str]
) -> None:
    """An output folder whose journals record every image of the tree as grounded."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vgtool", "ground", str(seed), *GROUND_ARGS, "--out", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    for name in ("annotations.json", "results.json", "run.json", "crops"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    next_id = 1
    names = [f"journal.rank{r}-of-{journals}.jsonl" for r in range(journals)] if journals > 1 else []
    (out / "journal.jsonl").write_bytes(b"")
    handles = [open(out / name, "wb") for name in names or ["journal.jsonl"]]  # noqa: SIM115
    try:
        for position in range(folders * files):
            file_name = f"d_{position // files:04d}/img_{position:07d}.jpg"
            annotations = []
            if position % boxes_every == 0:
                bbox = [10.0, 20.0, 100.0, 50.0]
                annotations.append(
                    {
                        "id": 1 if journals > 1 else next_id,
                        "image_id": position + 1,
                        "category_id": 1,
                        "bbox": bbox,
                        "area": 5000.0,
                        "iscrowd": 0,
                        "segmentation": [],
                        "score": 0.9,
                        "phrase": PHRASE,
                        "attributes": {"phrase": PHRASE, "score": 0.9},
                    }
                )
                crop = _crop_path(out, file_name, next_id)
                crop.parent.mkdir(parents=True, exist_ok=True)
                crop.touch()
                next_id += 1
            record = {
                "image_id": position + 1,
                "file_name": file_name,
                "width": 640,
                "height": 480,
                "annotations": annotations,
                **({"local_ids": True} if journals > 1 else {}),
            }
            handles[position % len(handles)].write(_journal_line(record))
    finally:
        for handle in handles:
            handle.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def measure(tree: Path, out: Path, env: dict[str, str], cwd: Path) -> dict:
    """Resume the finished run in ``out`` over ``tree`` in a fresh process."""
    command = [sys.executable, "-m", "vgtool", "ground", str(tree), *GROUND_ARGS, "--out", str(out)]
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # reaped here: its own rusage, not a sum
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"vgtool ground failed ({process.returncode}): {message}")
    counts = json.loads((out / "run.json").read_text())["counts"]
    return {
        "images": counts["images_listed"],
        "already_done": counts["already_done"],
        "grounded": counts["grounded_this_run"],
        "annotations": counts["annotations"],
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "annotations_sha256": _sha256(out / "annotations.json")[:16],
        "results_sha256": _sha256(out / "results.json")[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--files", type=int, default=1000, help="files per folder")
    parser.add_argument("--small", type=int, default=200, help="the small tree's image count")
    parser.add_argument("--boxes-every", type=int, default=100, help="one box on every K-th image")
    parser.add_argument("--journals", type=int, default=1, help="spread the records over N ranks' journals")
    parser.add_argument("--repeats", type=int, default=1, help="runs per count")
    parser.add_argument("--source", type=Path, help="the checkout whose vgtool package runs")
    parser.add_argument("--scratch", type=Path, help="where the trees and output folders go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="vgtool-run-memory-"))
    env = _environment(args.source)
    cwd = args.source or Path.cwd()
    try:
        seed = scratch / "seed"
        if not (seed / "seed.png").exists():
            from PIL import Image

            seed.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 48), (200, 40, 40)).save(seed / "seed.png")
        for name, folders, files in (("small", 1, args.small), ("large", args.folders, args.files)):
            tree = _tree(scratch / name, folders, files)
            out = scratch / f"{name}-out"
            for _ in range(args.repeats):
                _finished_run(out, folders, files, args.boxes_every, args.journals, seed, env)
                report = measure(tree, out, env, cwd)
                where = {"tree": name, "source": str(args.source or "."), "journals": args.journals}
                print(json.dumps({**where, **report}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
