"""``vgtool export MODEL --onnx``: write a model as ONNX graphs plus what its ONNX Runtime grounder
needs, check that onnxruntime reproduces torch, and optionally quantise to int8.

Exporters are looked up by family (:data:`EXPORTERS`), named by import path so that exporting one
family imports only its own dependencies. Each takes the loaded torch grounder and the output folder
and returns the manifest it wrote.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from vgtool.errors import CheckpointError
from vgtool.onnx_runtime.folder import OnnxManifest, write_manifest

# torch grounder family -> "module:function(grounder, out: Path, *, opset: int) -> OnnxManifest":
# it writes the graphs and the files its ONNX Runtime grounder needs, and returns the manifest
# unchecked. The module's ``check_against_torch(grounder, out, manifest, *, enforce)`` measures the
# graphs against torch (float graphs: raising beyond its tolerances; quantised: recording only).
EXPORTERS: dict[str, str] = {
    "vlgtr": "vgtool.onnx_export.vlgtr:export_vlgtr",
    "owlv2": "vgtool.onnx_export.owl:export_owl",
    "owlvit": "vgtool.onnx_export.owl:export_owl",
    "grounding-dino": "vgtool.onnx_export.grounding_dino:export_grounding_dino",
    "mm-grounding-dino": "vgtool.onnx_export.grounding_dino:export_grounding_dino",
    "omdet-turbo": "vgtool.onnx_export.omdet_turbo:export_omdet_turbo",
}
OPSET = 18


def export_onnx(
    spec: str | Path | None,
    out: Path,
    *,
    quantize: bool = False,
    opset: int = OPSET,
    overwrite: bool = False,
) -> OnnxManifest:
    """Export the model ``spec`` names (as ``--model`` takes it) into ``out``.

    The graphs are written into a folder beside ``out`` and moved into place only when the export
    and its check have passed, so a failed export leaves ``out`` as it was.

    Raises:
        CheckpointError: ``out`` is not empty (without ``overwrite``), the family has no ONNX
            export, or onnxruntime does not reproduce torch.
    """
    from vgtool.grounders import load_grounder

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: not empty; pass --overwrite or choose another --out")
    grounder = load_grounder(spec, device="cpu", bf16=False)
    if grounder.family not in EXPORTERS:
        raise CheckpointError(
            f"{spec}: no ONNX export for the {grounder.family} family (exportable: {', '.join(sorted(EXPORTERS))})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _export_into(grounder, partial, quantize=quantize, opset=opset)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return manifest


def _export_into(grounder: Any, folder: Path, *, quantize: bool, opset: int) -> OnnxManifest:
    """Export, check, quantise and check again; ``onnx.json`` is written last, so a folder whose
    graphs failed the check cannot be loaded."""
    module_name, name = EXPORTERS[grounder.family].split(":")
    module = importlib.import_module(module_name)
    manifest = getattr(module, name)(grounder, folder, opset=opset)
    manifest = replace(manifest, check=module.check_against_torch(grounder, folder, manifest))
    if quantize:
        from vgtool.onnx_export.quantize import quantize_folder

        manifest = quantize_folder(folder, manifest)
        int8 = module.check_against_torch(grounder, folder, manifest, enforce=False)
        manifest = replace(manifest, check={**manifest.check, "quantized": int8})
    write_manifest(folder, manifest)
    return manifest
