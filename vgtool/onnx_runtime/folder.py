"""An exported ONNX model folder: its manifest, ``onnx.json``, and how a ``--model`` spec finds it.

Layout (every family)::

    DIR/onnx.json      the manifest (:class:`OnnxManifest`)
    DIR/<graph>.onnx   one file per graph named in the manifest
    DIR/...            what the family's grounder needs besides the graphs: a vgtool checkpoint's
                       ``config.json`` and tokenizer files, or a Hugging Face model's config and
                       processor files (no weights)

``--model DIR`` or ``--model DIR/<graph>.onnx`` both name the folder. The manifest is read and
checked here, before onnxruntime is imported, so a wrong folder fails fast with one line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vgtool.errors import CheckpointError

MANIFEST = "onnx.json"
FORMAT = "vgtool-onnx"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class OnnxManifest:
    """What an exported folder holds.

    Attributes:
        family: the grounder family the graphs belong to (``vlgtr``, ``owlv2``, ...); selects the
            ONNX Runtime grounder in :data:`vgtool.grounders.registry.ONNX_FAMILIES`.
        graphs: graph role (``image``, ``text``, ``decode``, ...) -> file name in the folder.
        source: the exported model's identity (``model``, ``model_config``), as its torch grounder
            reports it, so runs of the two runtimes can be told apart but traced to one model.
        quantization: None for float32 graphs, else how they were quantised (``int8-dynamic``).
        check: the export-time comparison against torch (largest absolute differences per output).
        extra: the family's own settings (input size, phrase length, ...).
    """

    family: str
    graphs: dict[str, str]
    source: dict[str, str]
    quantization: str | None = None
    check: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}


def is_onnx_spec(spec: str | Path | None) -> bool:
    """Whether ``spec`` names an exported ONNX folder (or a graph file inside one)."""
    if spec is None or str(spec).startswith("hf:"):
        return False
    path = Path(spec).expanduser()
    if path.suffix == ".onnx":
        return True
    return (path / MANIFEST).is_file()


def onnx_folder(spec: str | Path) -> Path:
    """The exported folder ``spec`` names (the folder itself, or the folder of a ``.onnx`` file)."""
    path = Path(spec).expanduser()
    folder = path.parent if path.suffix == ".onnx" else path
    if path.suffix == ".onnx" and not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    if not (folder / MANIFEST).is_file():
        raise CheckpointError(
            f"{folder}: no {MANIFEST} here; export a model with `vgtool export MODEL --onnx --out DIR` "
            "and pass DIR (a lone .onnx file does not say how to feed it)"
        )
    return folder


def read_manifest(folder: Path) -> OnnxManifest:
    """Read and check ``folder/onnx.json`` and that every graph it names exists."""
    path = folder / MANIFEST
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vgtool ONNX manifest (format is not {FORMAT!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {document['format_version']} is newer than this vgtool reads "
            f"({FORMAT_VERSION}); upgrade vgtool"
        )
    try:
        manifest = OnnxManifest(
            family=str(document["family"]),
            graphs={str(k): str(v) for k, v in document["graphs"].items()},
            source={str(k): str(v) for k, v in document.get("source", {}).items()},
            quantization=document.get("quantization"),
            check=dict(document.get("check") or {}),
            extra=dict(document.get("extra") or {}),
        )
    except (KeyError, AttributeError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed manifest ({err!r})") from None
    for role, name in manifest.graphs.items():
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing (the {role} graph named in {MANIFEST})")
    return manifest


def write_manifest(folder: Path, manifest: OnnxManifest) -> Path:
    """Write ``folder/onnx.json``."""
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
