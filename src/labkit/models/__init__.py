"""Models that two or more pillars use: MLP and CNN builders.

Pillar-only models live in their pillar (``labkit.grokking.models``, ``labkit.grokking.xor``,
``labkit.diffusion.models``). Their old names here still resolve, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from labkit.deprecation import moved_names
from labkit.models.core import cnn, count_parameters, mlp

__all__ = ["cnn", "count_parameters", "mlp"]

__getattr__ = moved_names(__name__, {
    "OneHotMLP": "labkit.grokking.models",
    "OneLayerTransformer": "labkit.grokking.models",
    "TwoLayerReLU": "labkit.grokking.xor",
    "MLPDenoiser": "labkit.diffusion.models",
})
