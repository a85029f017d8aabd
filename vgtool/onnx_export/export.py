"""``vgtool export MODEL --onnx``: write a model as ONNX graphs plus what its ONNX Runtime grounder
needs, check that onnxruntime reproduces torch, and optionally quantise to int8.

Exporters are looked up by family (:data:`EXPORTERS`), named by import path so that exporting one
family imports only its own dependencies. Each takes the loaded torch grounder and the output folder
and returns the manifest it wrote.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import replace
from pathlib import Path

from vgtool.errors import CheckpointError
from vgtool.onnx_export.folder import OnnxManifest, write_manifest

# torch grounder family -> "module:function(grounder, out: Path, *, opset: int) -> OnnxManifest".
# A family module may also define ``check_against_torch(grounder, out, manifest, *, enforce)``;
# it then measures the quantised graphs' differences from torch too.
EXPORTERS: dict[str, str] = {
    "vlgtr": "vgtool.onnx_export.vlgtr:export_vlgtr",
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

    Raises:
        CheckpointError: the family has no ONNX exporter, or onnxruntime does not reproduce torch.
    """
    from vgtool.grounders import load_grounder

    grounder = load_grounder(spec, device="cpu", bf16=False)
    if grounder.family not in EXPORTERS:
        raise CheckpointError(
            f"{spec}: no ONNX export for the {grounder.family} family (exportable: {', '.join(sorted(EXPORTERS))})"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{out}: not empty; pass --overwrite or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    module_name, name = EXPORTERS[grounder.family].split(":")
    module = importlib.import_module(module_name)
    manifest = getattr(module, name)(grounder, out, opset=opset)
    if quantize:
        from vgtool.onnx_export.quantize import quantize_folder

        manifest = quantize_folder(out, manifest)
        if hasattr(module, "check_against_torch"):
            int8 = module.check_against_torch(grounder, out, manifest, enforce=False)
            manifest = replace(manifest, check={**manifest.check, "quantized": int8})
            write_manifest(out, manifest)
    return manifest
