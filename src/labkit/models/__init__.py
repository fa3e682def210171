"""Small, device-agnostic models. Pillar-specific models live in their own files (resolved lazily)."""

from __future__ import annotations

import importlib
from typing import Any

from labkit.models.core import TwoLayerReLU, cnn, count_parameters, mlp

_LAZY = {
    "OneHotMLP": "labkit.models.transformer",
    "OneLayerTransformer": "labkit.models.transformer",
    "MLPDenoiser": "labkit.models.denoisers",
    "DigitsDenoiser": "labkit.models.denoisers",
    "NoisyClassifier": "labkit.models.denoisers",
}

__all__ = ["TwoLayerReLU", "cnn", "count_parameters", "mlp", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labkit.models' has no attribute {name!r}")
