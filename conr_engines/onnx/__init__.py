"""ONNX: the contract of the files, the Paddle export, the onnxruntime runner."""
