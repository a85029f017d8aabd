"""``export.json``: what an export holds and how it was made, written last (its presence marks a
finished export, which ``--overwrite`` may replace)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vgtool import __version__
from vgtool.exports.plan import ExportPlan

EXPORT_MANIFEST = "export.json"


def export_manifest(
    plan: ExportPlan,
    *,
    format_name: str,
    image_paths: dict[str, str],
    label_paths: dict[str, list[str]],
) -> dict[str, Any]:
    """The manifest document.

    Args:
        image_paths: run ``file_name`` -> the image written in the export (absent: not written).
        label_paths: run ``file_name`` -> the label files that hold its boxes.
    """
    run = plan.run
    return {
        "vgtool_version": __version__,
        "format": format_name,
        "run": str(run.run_dir.resolve()),
        "model": run.model_version,
        "image_root": None if run.image_root is None else str(run.image_root),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan.options).items()},
        "categories": [{"id": c.id, "name": c.name} for c in plan.categories],
        "counts": {
            "images": len(plan.items),
            "boxes": sum(len(item.image.boxes) for item in plan.items),
            "dropped_images": plan.dropped_images,
            "dropped_boxes": plan.dropped_boxes,
            "skipped_by_run": len(run.skipped),
            **{f"subset_{s}": len(plan.subset_items(s)) for s in plan.subsets},
        },
        "images": [
            {
                "file_name": item.image.file_name,
                "name": item.name,
                "subset": item.subset,
                "image": image_paths.get(item.image.file_name),
                "labels": label_paths.get(item.image.file_name, []),
            }
            for item in plan.items
        ],
    }


def write_export_manifest(out_dir: Path, document: dict[str, Any]) -> Path:
    path = out_dir / EXPORT_MANIFEST
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
