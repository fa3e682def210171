"""Data that two or more pillars use: bundled or generated only, nothing here downloads.

Pillar-only data sets live in their pillar (``labkit.attributions.data``, ``labkit.grokking.modular``,
``labkit.grokking.xor``, ``labkit.sam.noise``). Their old names here still resolve, with a
``DeprecationWarning`` that says where they moved.
"""

from __future__ import annotations

from labkit.data.core import Split, digits
from labkit.deprecation import moved_names

__all__ = ["Split", "digits"]

__getattr__ = moved_names(__name__, {
    "block_digits": "labkit.attributions.data",
    "BlockDigits": "labkit.attributions.data",
    "two_digit_canvas": "labkit.attributions.data",
    "modular_arithmetic": "labkit.grokking.modular",
    "ModularSplit": "labkit.grokking.modular",
    "xor_clusters": "labkit.grokking.xor",
    "XorClusters": "labkit.grokking.xor",
    "noisy_labels": "labkit.sam.noise",
})


def __dir__() -> list[str]:
    return sorted(__all__)


