"""Pick a dataset reader from a :class:`DataConfig` (or from the look of the path) and run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from vgtool.datasets.coco_phrases import INSTANCES_PREFIX, load_coco_phrases
from vgtool.datasets.flickr30k import load_flickr30k
from vgtool.datasets.labelstudio import load_labelstudio, looks_like_labelstudio
from vgtool.datasets.odvg import load_odvg
from vgtool.datasets.refcoco_parquet import load_refcoco_parquet
from vgtool.datasets.refer import load_refer
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import ConfigError, InputError

DataFormat = Literal["auto", "coco", "refer", "refcoco-parquet", "flickr30k", "odvg", "labelstudio"]
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)
"""Every value ``data.format`` (and ``--format``) takes, ``auto`` first."""


@dataclass(frozen=True)
class DataConfig:
    """Where a dataset lives and how to read it.

    Attributes:
        format: the on-disk layout; ``auto`` guesses it with :func:`detect_format`.
        path: the file or folder of the annotations.
        split: ``train``, ``val``, ``test``, ``testA``, ``testB``...; ``None`` reads everything.
        image_root: the folder images are relative to (required for ``refer``, whose annotations
            live apart from the COCO images); each reader has its own default otherwise.
        split_by: ``refer`` only: which ``refs(<split_by>).p`` to read (``unc``, ``google``, ``umd``).
    """

    format: DataFormat = "auto"
    path: str = ""
    split: str | None = None
    image_root: str | None = None
    split_by: str | None = None


def _load_refer(config: DataConfig) -> list[GroundingSample]:
    if config.image_root is None:
        raise ConfigError("data.image_root is required for format 'refer' (the COCO train2014 folder)")
    return load_refer(config.path, config.split, config.image_root, split_by=config.split_by)


_READERS: dict[str, Callable[[DataConfig], list[GroundingSample]]] = {
    "coco": lambda config: load_coco_phrases(config.path, config.split, config.image_root),
    "refer": _load_refer,
    "refcoco-parquet": lambda config: load_refcoco_parquet(config.path, config.split, config.image_root),
    "flickr30k": lambda config: load_flickr30k(config.path, config.split, config.image_root),
    "odvg": lambda config: load_odvg(config.path, config.image_root),
    "labelstudio": lambda config: load_labelstudio(config.path, config.split, config.image_root),
}


def detect_format(path: str | Path) -> str:
    """Guess a dataset's format from its path.

    Rules, in order: a folder with ``refs(*).p`` (or such a file) is ``refer``; ``*.jsonl`` is
    ``odvg``; a folder with ``Sentences/`` and ``Annotations/`` is ``flickr30k``; a folder with
    ``annotations/instances_*.json`` (datumaro's layout) is ``coco``; ``*.parquet`` or a folder holding
    any is ``refcoco-parquet``; a ``*.json`` whose top level is a list of Label Studio tasks, or a
    folder whose ``.json`` files all are, is ``labelstudio`` (judged from the first task); any other
    ``*.json`` or a folder holding one is ``coco``.

    Raises:
        InputError: the path does not exist.
        ConfigError: the path matches no rule.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such dataset file or folder")
    if path.is_file():
        by_suffix = {".jsonl": "odvg", ".parquet": "refcoco-parquet", ".json": "coco", ".p": "refer"}
        if path.suffix.lower() == ".json" and looks_like_labelstudio(path):
            return "labelstudio"
        if path.suffix.lower() in by_suffix and (path.suffix != ".p" or path.name.startswith("refs(")):
            return by_suffix[path.suffix.lower()]
    else:
        if any(path.glob("refs(*).p")):
            return "refer"
        if (path / "Sentences").is_dir() and (path / "Annotations").is_dir():
            return "flickr30k"
        if any((path / "annotations").glob(f"{INSTANCES_PREFIX}*.json")):
            return "coco"
        if any(path.rglob("*.parquet")):
            return "refcoco-parquet"
        json_files = sorted(path.glob("*.json"))
        if json_files:
            return "labelstudio" if all(looks_like_labelstudio(file) for file in json_files) else "coco"
    raise ConfigError(
        f"{path}: cannot tell the dataset format; set data.format to one of {', '.join(_READERS)}"
    )


def load_samples(config: DataConfig) -> list[GroundingSample]:
    """Read the samples ``config`` describes.

    Raises:
        ConfigError: no path, an unknown format, or options the format does not take.
        InputError: the data itself cannot be read (missing files, malformed records).
    """
    if not config.path:
        raise ConfigError("data.path is not set")
    data_format = detect_format(config.path) if config.format == "auto" else config.format
    if data_format not in _READERS:
        raise ConfigError(f"data.format: {data_format!r} is not one of auto, {', '.join(_READERS)}")
    if config.split_by is not None and data_format != "refer":
        raise ConfigError(f"data.split_by only applies to format 'refer', not {data_format!r}")
    return _READERS[data_format](config)
