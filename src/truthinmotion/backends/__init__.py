"""Layer 1: how models are obtained and run: pretrained weights (hub ids, caches, local folders),
ONNX Runtime (exports cached by weights, int8), devices and autocast.

See docs/architecture.md for the layers and a module map.
"""
