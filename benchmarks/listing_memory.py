"""Memory and time of listing a large folder tree with ``list_images``.

Makes a tree of empty files (``FOLDERS`` folders of ``FILES`` files named like ``img_0000123.jpg``)
unless ``--tree`` names one, then lists it recursively in a fresh process for each count, and
prints one JSON line per count:

* ``seconds``: time of the ``list_images`` call;
* ``peak_rss_mib``: the process's peak resident memory (``ru_maxrss``), interpreter and imports
  included, so compare counts with each other rather than read it alone;
* ``traced_mib``: Python memory still allocated, after the call, by what the call returned
  (``tracemalloc``), and ``bytes_per_image`` of it;
* ``traced_peak_mib``: the peak of Python allocations during the call;
* ``pickled_mib``: the size of the returned list pickled (what a spawned DataLoader worker receives).

    python benchmarks/listing_memory.py --folders 1000 --files 1000 --small 200
    python benchmarks/listing_memory.py --tree /data/photos

A million files need a million free inodes (``df -i``); making and removing them takes minutes,
most of it in the file system, not in the listing.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def make_tree(root: Path, folders: int, files: int) -> None:
    """``folders`` x ``files`` empty ``.jpg`` files under ``root``."""
    for d in range(folders):
        folder = root / f"d_{d:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            os.close(os.open(folder / f"img_{d * files + f:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))


def measure(tree: Path, trace: bool) -> dict[str, float]:
    """List ``tree`` in this process (a fresh one: the peak RSS is this call's)."""
    from vgtool.data.listing import list_images

    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    entries = list_images([tree], recursive=True)
    seconds = time.perf_counter() - start
    report = {"images": len(entries), "seconds": round(seconds, 2)}
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report["traced_mib"] = round(current / 2**20, 2)
        report["bytes_per_image"] = round(current / len(entries), 1)
        report["traced_peak_mib"] = round(peak / 2**20, 2)
    report["pickled_mib"] = round(len(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--files", type=int, default=1000, help="files per folder")
    parser.add_argument("--small", type=int, default=200, help="the small tree's image count")
    parser.add_argument("--tree", type=Path, help="list this folder instead of generated ones")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.trace)))
        return
    scratch = Path(tempfile.mkdtemp(prefix="vgtool-listing-"))
    try:
        if args.tree is not None:
            trees = [args.tree]
        else:
            trees = [scratch / "small", scratch / "large"]
            make_tree(trees[0], 1, args.small)
            make_tree(trees[1], args.folders, args.files)
        for tree in trees:
            for trace in (False, True):  # tracing slows the call and adds its own memory: apart
                child = [sys.executable, __file__, "--child", str(tree)] + ["--trace"] * trace
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                print(json.dumps({"tree": str(tree), "traced": trace, **json.loads(out)}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
