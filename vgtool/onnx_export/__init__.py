"""Models as ONNX graphs for ONNX Runtime: the exported folder (:mod:`.folder`), sessions
(:mod:`.session`), the exporters per family and int8 quantisation."""
