"""skewguard: serve scikit-learn pipelines as verified ONNX cascades, with a skew guard."""

__version__ = "0.1.0"
