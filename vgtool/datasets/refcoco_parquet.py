"""Read RefCOCO / RefCOCO+ / RefCOCOg as published in parquet on the Hugging Face hub (jxu124/refcoco).

Each row is one ref: ``ref_id, ann_id, image_id, split, sentences`` (a list of
``{raw, sent, sent_id, tokens}`` or the same as a JSON string), ``bbox`` as **x0,y0,x1,y1** pixels
(not COCO xywh), ``image_path`` such as ``coco/train2014/COCO_train2014_000000581857.jpg`` and
``file_name`` with a per-ref suffix (``..._1.jpg``). Images come from a local COCO folder.

Split names: hub files are ``<split>-00000-of-00001-<hash>.parquet`` (or sit in ``<split>/``) and may
name a split differently from the ``split`` column (``validation`` files hold ``val`` rows; refcoco
ships a ``test`` file but no ``testA`` one). So a split is matched on file names first, and only when
no file matches, on the column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError

_REQUIRED_COLUMNS = ("ref_id", "ann_id", "image_id", "split", "sentences", "bbox")
_OPTIONAL_COLUMNS = ("image_path", "file_name", "category_id", "raw_image_info")
_SPLIT_ALIASES = {"val": ("val", "validation"), "validation": ("val", "validation")}
_REF_SUFFIX = re.compile(r"^(.*_\d{12})_\d+(\.\w+)$")  # COCO_train2014_000000581857_1.jpg


def _split_names(split: str) -> tuple[str, ...]:
    return _SPLIT_ALIASES.get(split, (split,))


def _file_split_matches(file: Path, root: Path, split: str) -> bool:
    """``<split>-00000-of-00001.parquet`` (hub uploads) or ``<split>/0000.parquet`` (hub conversions)."""
    folders = file.relative_to(root).parts[:-1]
    return any(
        file.stem == name or file.stem.startswith((f"{name}-", f"{name}_")) or name in folders
        for name in _split_names(split)
    )


def parquet_files(path: Path, split: str | None) -> tuple[list[Path], bool]:
    """The parquet files to read, and whether they were chosen by split name.

    Returns:
        The files sorted by path, and ``True`` when ``split`` matched file names (so the rows need no
        further filtering on the ``split`` column).
    """
    if path.is_file():
        return [path], False
    if not path.is_dir():
        raise InputError(f"{path}: no such parquet file or folder")
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise InputError(f"{path}: no .parquet files in this folder")
    if split is not None:
        by_name = [file for file in files if _file_split_matches(file, path, split)]
        if by_name:
            return by_name, True
    return files, False


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f'{path}: reading parquet needs pyarrow: pip install "vgtool[parquet]"') from None
    try:
        names = pq.read_schema(path).names
        missing = [column for column in _REQUIRED_COLUMNS if column not in names]
        if "image_path" not in names and "file_name" not in names:
            missing.append("image_path")
        if missing:
            raise InputError(f"{path}: not a RefCOCO parquet file: no column {', '.join(missing)}")
        columns = [column for column in (*_REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS) if column in names]
        return pq.read_table(path, columns=columns).to_pylist()
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read parquet: {err}") from None


def _json_field(value: Any) -> Any:
    """A field that may be stored either as nested data or as a JSON string."""
    return json.loads(value) if isinstance(value, str) else value


def _image_candidates(image_root: Path, row: dict[str, Any]) -> list[Path]:
    """Where the row's image may be: ``image_path`` under ``image_root``, dropping leading folders."""
    relative = str(row.get("image_path") or "")
    if not relative:
        name = str(row.get("file_name") or "")
        match = _REF_SUFFIX.match(name)
        relative = match.group(1) + match.group(2) if match else name
    parts = Path(relative).parts
    return [image_root.joinpath(*parts[start:]) for start in range(len(parts))]


def _resolve_image(image_root: Path, row: dict[str, Any], cache: dict[str, Path]) -> Path:
    key = f"{row.get('image_path')}|{row.get('file_name')}"
    if key not in cache:
        candidates = _image_candidates(image_root, row)
        if not candidates:
            raise ValueError("the row has no image_path or file_name")
        cache[key] = next((path for path in candidates if path.is_file()), candidates[0])
    return cache[key]


def _row_samples(row: dict[str, Any], image_path: Path) -> Iterable[GroundingSample]:
    x0, y0, x1, y1 = (float(v) for v in row["bbox"])
    box_xyxy = np.array([[x0, y0, x1, y1]], dtype=np.float32)
    image_info = _json_field(row.get("raw_image_info")) or {}
    for sentence in _json_field(row["sentences"]):
        if isinstance(sentence, str):
            sentence = {"raw": sentence}
        raw = str(sentence.get("raw") or sentence.get("sent") or "")
        yield GroundingSample(
            image_path=image_path,
            phrase=raw,
            boxes_xyxy=box_xyxy,
            image_id=int(row["image_id"]),
            width=image_info.get("width"),
            height=image_info.get("height"),
            sample_id=sentence.get("sent_id"),
            meta={
                "ref_id": int(row["ref_id"]),
                "ann_id": int(row["ann_id"]),
                "split": str(row["split"]),
                "sent": str(sentence.get("sent", raw)),
                "category_id": row.get("category_id"),
            },
        )


def load_refcoco_parquet(
    path: str | Path,
    split: str | None = None,
    image_root: str | Path | None = None,
) -> list[GroundingSample]:
    """One sample per referring sentence of a RefCOCO-family parquet dataset.

    Args:
        path: a parquet file, or a folder searched recursively for ``*.parquet``.
        split: ``train``, ``val``/``validation``, ``test``, ``testA``, ``testB``; ``None`` reads all.
        image_root: the COCO folder that ``image_path`` is relative to (``image_root/<image_path>``,
            then with its leading folders dropped one by one, down to the bare file name). Defaults
            to the folder of ``path``.

    Returns:
        Samples sorted by image id, ref id and sentence order. Refs repeated across files (the hub
        has held stale duplicate shards) are read once.
    """
    path = Path(path)
    files, chosen_by_name = parquet_files(path, split)
    root = Path(image_root) if image_root is not None else (path if path.is_dir() else path.parent)
    rows_by_key: dict[tuple[int, int], tuple[Path, dict[str, Any]]] = {}
    for file in files:
        for row in _read_rows(file):
            if split is not None and not chosen_by_name and str(row["split"]) not in _split_names(split):
                continue
            try:
                key = (int(row["image_id"]), int(row["ref_id"]))
            except (TypeError, ValueError):
                raise InputError(f"{file}: a row has no integer image_id and ref_id") from None
            rows_by_key.setdefault(key, (file, row))
    if split is not None and not rows_by_key:
        raise InputError(f"{path}: no parquet file or row for split {split!r}")

    samples: list[GroundingSample] = []
    cache: dict[str, Path] = {}
    for key in sorted(rows_by_key):
        file, row = rows_by_key[key]
        try:
            samples += _row_samples(row, _resolve_image(root, row, cache))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{file}: bad row for ref {row['ref_id']}: {err!r}") from None
    return samples
