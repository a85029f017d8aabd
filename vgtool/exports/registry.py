"""The export formats by ``--to`` name; a new format is one module and one entry here."""

from __future__ import annotations

from vgtool.errors import InputError
from vgtool.exports.format import ExportFormat
from vgtool.exports.formats.coco import CocoFormat
from vgtool.exports.formats.labelme import LabelMeFormat
from vgtool.exports.formats.labelstudio import LabelStudioFormat
from vgtool.exports.formats.odvg import OdvgFormat
from vgtool.exports.formats.voc import VocFormat
from vgtool.exports.formats.yolo import YoloFormat

FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (LabelStudioFormat(), YoloFormat(), VocFormat(), CocoFormat(), OdvgFormat(), LabelMeFormat())
}


def get_format(name: str) -> ExportFormat:
    """The format called ``name``.

    Raises:
        InputError: no such format; the message lists the known ones.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise InputError(f"--to: unknown format {name!r} (one of {', '.join(FORMATS)})") from None
