"""Fitted pipeline → ONNX graph → parity gate → model store → Bento service."""
