"""Export a checkpoint for inference: safetensors weights with a JSON of the model config, and
an ONNX model, each checked against PyTorch on a real batch (`python -m src.export`)."""
