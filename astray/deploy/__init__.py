"""Using trained models: find them (``trained``), export them to ONNX with a parity
check (``export``), evaluate them per class (``per_class``)."""
