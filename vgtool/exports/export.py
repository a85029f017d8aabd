"""``export_labels()``: a finished grounding run to one or more annotation-tool formats.

For each format: read the run, keep the boxes and images the options allow
(:func:`~vgtool.exports.plan.plan_export`), place the images (copy, link or none), write the
labels, then ``export.json``. An export that fails removes what it wrote.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgtool.errors import InputError
from vgtool.exports.format import ExportFormat
from vgtool.exports.images import SourceImage, place_image, read_header
from vgtool.exports.manifest import EXPORT_MANIFEST, export_manifest, write_export_manifest
from vgtool.exports.options import ExportOptions
from vgtool.exports.plan import ExportPlan, plan_export
from vgtool.exports.registry import get_format
from vgtool.exports.run import FinishedRun, load_run

EXPORTS_DIR = "exports"


@dataclass(frozen=True)
class ExportResult:
    """What one format's export wrote.

    Attributes:
        upright: copies re-encoded in their displayed orientation (EXIF orientation not 1).
        linked_turned: links to images with an EXIF orientation (readers that ignore it see them
            turned against the labels).
        serving: for formats whose images a server reads (Label Studio's local files): the
            server's document root and the image folder below it; None otherwise.
    """

    format: str
    out_dir: Path
    images: int
    boxes: int
    dropped_images: int
    dropped_boxes: int
    upright: int = 0
    linked_turned: int = 0
    serving: tuple[Path, Path] | None = None


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Make sure ``out_dir`` can be written: absent, empty, or an earlier export to replace."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir}: not empty (--overwrite replaces an earlier export)")
        if not (out_dir / EXPORT_MANIFEST).is_file():
            raise InputError(
                f"{out_dir}: not an earlier export (no {EXPORT_MANIFEST}); refusing to replace it"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _source_header(path: Path, width: int, height: int) -> SourceImage:
    header = read_header(path)
    if header.displayed_wh != (width, height):
        w, h = header.displayed_wh
        raise InputError(
            f"{path}: is {w}x{h} but the run labelled a {width}x{height} image "
            "(pass --images with the folder the run read)"
        )
    return header


def _place_images(
    plan: ExportPlan, fmt: ExportFormat, out_dir: Path, *, quiet: bool
) -> tuple[dict[str, str], int, list[str]]:
    """Copy or link every exported image; returns where each went, how many copies were turned
    upright, and the linked images that carry an EXIF orientation."""
    from tqdm import tqdm

    mode = plan.options.images_mode
    if mode == "none":
        return {}, 0, []
    root = plan.run.image_root
    if root is None:
        raise InputError(
            f"{plan.run.run_dir}/run.json has no image_root (images from several folders); "
            "pass --images DIR, or --images-mode none"
        )
    placed: dict[str, str] = {}
    upright, linked_turned = 0, []
    for item in tqdm(plan.items, desc=f"export {fmt.name}", unit="img", disable=quiet, dynamic_ncols=True):
        image = item.image
        source = root / image.file_name
        header = _source_header(source, image.width, image.height)
        relative = fmt.image_path(item)
        place_image(source, out_dir / relative, mode, header)
        placed[image.file_name] = relative
        if header.orientation != 1:
            if mode == "copy":
                upright += 1
            else:
                linked_turned.append(image.file_name)
    return placed, upright, linked_turned


def _export_one(
    run: FinishedRun,
    fmt: ExportFormat,
    out_dir: Path,
    options: ExportOptions,
    *,
    overwrite: bool,
    quiet: bool,
) -> ExportResult:
    plan = plan_export(run, options, fmt.layout)
    _prepare_out_dir(out_dir, overwrite)
    try:
        placed, upright, linked_turned = _place_images(plan, fmt, out_dir, quiet=quiet)
        labels = fmt.write(plan, out_dir)
        document = export_manifest(plan, format_name=fmt.name, image_paths=placed, label_paths=labels)
        write_export_manifest(out_dir, document)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if linked_turned:
        _warn(
            f"{len(linked_turned)} linked image(s) carry an EXIF orientation (first: {linked_turned[0]}); "
            "readers that ignore it (datumaro, CVAT) see them turned against the labels; "
            "--images-mode copy writes them upright"
        )
    return ExportResult(
        format=fmt.name,
        out_dir=out_dir,
        images=len(plan.items),
        boxes=document["counts"]["boxes"],
        dropped_images=plan.dropped_images,
        dropped_boxes=plan.dropped_boxes,
        upright=upright,
        linked_turned=len(linked_turned),
        serving=fmt.serving(plan, out_dir) if hasattr(fmt, "serving") else None,
    )


def export_labels(
    run_dir: str | Path,
    *,
    to: str | Sequence[str],
    out: str | Path | None = None,
    images: str | Path | None = None,
    options: ExportOptions | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    progress: Callable[[ExportResult], None] | None = None,
) -> list[ExportResult]:
    """Export a finished grounding run to annotation-tool formats.

    Args:
        run_dir: the folder ``vgtool ground --out`` wrote.
        to: format names (see :data:`~vgtool.exports.registry.FORMATS`).
        out: the export folder; with several formats, each goes to ``out/<format>``.
            Default: ``run_dir/exports/<format>``.
        images: the folder the run's ``file_name`` values are relative to, when ``run.json``'s
            ``image_root`` is missing or moved.
        options: what to keep and how to write it.
        overwrite: replace an earlier export in the output folder.
        quiet: no progress bar.
        progress: called with each format's result as it finishes.

    Returns:
        One result per format, in the order asked.

    Raises:
        InputError: an unknown format or class, a missing or corrupt run, a missing image, or an
            output folder that cannot be used; formats finished before the error are kept.
    """
    names = [to] if isinstance(to, str) else list(dict.fromkeys(to))
    if not names:
        raise InputError("--to: name at least one format")
    formats = [get_format(name) for name in names]
    options = options or ExportOptions()
    run = load_run(run_dir, images)
    results = []
    for fmt in formats:
        if out is None:
            out_dir = Path(run_dir) / EXPORTS_DIR / fmt.name
        else:
            out_dir = Path(out) if len(formats) == 1 else Path(out) / fmt.name
        result = _export_one(run, fmt, out_dir, options, overwrite=overwrite, quiet=quiet)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
