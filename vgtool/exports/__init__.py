"""Exports of a finished grounding run to annotation-tool formats (Label Studio, YOLO, Pascal VOC,
COCO in datumaro's layout, ODVG, LabelMe), each one module behind one protocol."""

from vgtool.exports.export import ExportResult, export_labels
from vgtool.exports.options import ExportOptions
from vgtool.exports.registry import FORMATS, get_format
from vgtool.exports.run import FinishedRun, load_run

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportResult",
    "FinishedRun",
    "export_labels",
    "get_format",
    "load_run",
]
