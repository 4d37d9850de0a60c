"""skewguard: serve scikit-learn pipelines as verified ONNX cascades, with a skew guard.

The repository's folders ``bentos/``, ``gateway/``, ``monitoring/`` and ``pipeline/`` are
installed as ``skewguard.bentos``, ``skewguard.gateway``, ... The public API is re-exported
here and imported on first use, so ``import skewguard`` (and ``skewguard.errors``) stays light::

    from skewguard import package_model
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "package_model": "skewguard.bentos.package",
    "OnnxRunner": "skewguard.bentos.runner",
    "Settings": "skewguard.settings",
    "SkewguardError": "skewguard.errors",
    "ConfigError": "skewguard.errors",
    "ConversionError": "skewguard.errors",
    "ParityError": "skewguard.errors",
    "InputError": "skewguard.errors",
}
__all__ = [
    "ConfigError",
    "ConversionError",
    "InputError",
    "OnnxRunner",
    "ParityError",
    "Settings",
    "SkewguardError",
    "package_model",
]

if TYPE_CHECKING:
    from skewguard.bentos.package import package_model
    from skewguard.bentos.runner import OnnxRunner
    from skewguard.errors import ConfigError, ConversionError, InputError, ParityError, SkewguardError
    from skewguard.settings import Settings


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'skewguard' has no attribute {name!r}")
    return getattr(import_module(module), name)
