"""``vgtool export --onnx``: models written as ONNX graphs (one exporter per family, each checked
against torch through its ONNX Runtime grounder) and int8 quantisation. The folder they write is
described in :mod:`vgtool.onnx_runtime.folder`."""
