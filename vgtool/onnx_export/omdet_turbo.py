"""OmDet-Turbo has no ONNX export: a trace of its forward holds a prompt instead of reading one.

The model encodes the class names and the task prompt inside ``forward``, through caches keyed by
the tokens' values (a Python lookup a trace cannot follow). Traced with the prompt already cached,
the graph has no text inputs at all and grounds that prompt whatever it is fed; traced with an
empty cache, it keeps the token inputs but fixes the number of classes and drops the classes'
attention mask (tiny test model: another prompt's logits off by 6e-4). An export would need the
text tower cut out into a graph of its own and the decoder fed its embeddings, as
:mod:`vgtool.onnx_export.owl` cuts OWL; until then the export stops with one line.
"""

from __future__ import annotations

from pathlib import Path

from vgtool.errors import CheckpointError
from vgtool.grounders.omdet_turbo import OmDetTurboGrounder
from vgtool.onnx_runtime.folder import OnnxManifest


def export_omdet_turbo(grounder: OmDetTurboGrounder, out: Path, *, opset: int) -> OnnxManifest:
    """Refuse (see the module docstring).

    Raises:
        CheckpointError: always.
    """
    raise CheckpointError(
        f"{grounder.source}: OmDet-Turbo cannot be exported to ONNX: it encodes the prompt inside its "
        "forward through a cache keyed by the tokens, so a traced graph grounds the prompt it was "
        "traced with, not the phrases it is given; run it with torch"
    )
