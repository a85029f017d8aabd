"""Comparing onnxruntime's outputs with torch's, for the export-time check.

An exporter runs both runtimes on inputs other than the ones it traced with (other batch and phrase
counts, other image sizes where the graph takes any), keeps the largest absolute difference of each
output in the manifest's ``check``, and, for float graphs, stops the export with one line when one
is beyond its tolerance. Quantised graphs differ by design: their differences are only recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from vgtool.errors import CheckpointError


def max_abs_diff(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """The largest ``|expected - actual|`` over the entries finite in both; an entry finite in one
    and not in the other (a ``-inf`` logit of padding out of place) counts as ``inf``.

    Raises:
        CheckpointError: the shapes differ.
    """
    expected, actual = expected.detach().float().cpu(), actual.detach().float().cpu()
    if expected.shape != actual.shape:
        raise CheckpointError(f"onnxruntime gave shape {list(actual.shape)}, torch {list(expected.shape)}")
    finite = expected.isfinite()
    if not torch.equal(finite, actual.isfinite()):
        return float("inf")
    if not finite.any():
        return 0.0
    return float((expected[finite] - actual[finite]).abs().max())


def compare_outputs(
    where: Path,
    expected: Mapping[str, torch.Tensor],
    actual: Mapping[str, torch.Tensor],
    tolerances: Mapping[str, float],
    *,
    enforce: bool,
) -> dict[str, float]:
    """Compare outputs by name.

    Args:
        where: the exported folder or graph (named in the error).
        expected: torch's outputs; ``actual``: onnxruntime's, by the same names.
        tolerances: the largest absolute difference each output may show.
        enforce: raise when one is beyond its tolerance (float graphs).

    Returns:
        ``{output name: max abs difference}``.

    Raises:
        CheckpointError: a shape differs, or (with ``enforce``) a difference is beyond tolerance.
    """
    diffs: dict[str, float] = {}
    for name, reference in expected.items():
        try:
            diffs[name] = max_abs_diff(reference, actual[name])
        except CheckpointError as err:
            raise CheckpointError(f"{where}: output {name}: {err}; the export is unusable") from None
    beyond = [
        f"{name} by {diff:.2e} (tolerance {tolerances[name]:.0e})"
        for name, diff in diffs.items()
        if not diff <= tolerances[name]
    ]
    if enforce and beyond:
        raise CheckpointError(
            f"{where}: onnxruntime does not reproduce torch ({', '.join(beyond)}); the export is unusable"
        )
    return diffs


def worst(*diffs: Mapping[str, float]) -> dict[str, float]:
    """The largest difference of each output over several comparisons, to three digits."""
    names = dict.fromkeys(name for diff in diffs for name in diff)
    return {name: float(f"{max(diff.get(name, 0.0) for diff in diffs):.3g}") for name in names}
