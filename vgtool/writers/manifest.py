"""``run.json``: what ran, with which model and arguments, how long it took, what was skipped."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from vgtool import __version__
from vgtool.atomic import write_bytes_atomic


def write_manifest(
    out_dir: Path,
    summary,
    *,
    model: dict[str, Any],
    arguments: dict[str, Any],
    started: float,
    image_root: Path | None = None,
) -> Path:
    """Write ``run.json`` next to ``annotations.json`` (timestamps live here, not in annotations).

    Args:
        summary: the run's :class:`~vgtool.ground.pipeline.RunSummary`.
        model: what identifies the model (path, hashes).
        arguments: the run's settings.
        started: the start time (``time.time()``).
        image_root: the absolute folder the images' ``file_name`` values are relative to (exports
            read the images from there); None when there is no single one.
    """
    document = {
        "vgtool_version": __version__,
        "model": model,
        "image_root": None if image_root is None else str(image_root),
        "arguments": arguments,
        "counts": {
            "images_listed": summary.images,
            "grounded_this_run": summary.grounded,
            "already_done": summary.resumed,
            "outputs_rewritten": summary.repaired,
            "skipped": len(summary.skipped),
            "annotations": summary.annotations,
        },
        "timings_s": summary.timings,
        "skipped": summary.skipped,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": {"python": platform.python_version(), "platform": platform.platform()},
    }
    path = out_dir / "run.json"
    write_bytes_atomic(path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())
    return path
