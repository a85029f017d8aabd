"""Exported ONNX folders as the ONNX Runtime grounders read them: the manifest (:mod:`.folder`),
sessions (:mod:`.session`) and what a run records of them (:mod:`.runtime_info`). The exporters
that write them are in :mod:`vgtool.onnx_export`."""
