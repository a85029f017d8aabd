"""The interop tests reuse the export tests' grounding run."""

from tests.exports.conftest import grounded_run  # noqa: F401  (a fixture, shared)
