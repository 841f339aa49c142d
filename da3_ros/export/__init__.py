"""The export toolchain: ONNX graphs, export patches, fp16, the Triton repository and server."""
