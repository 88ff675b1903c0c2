"""On-device language model: the Generator interface and its onnxruntime implementation."""
