"""Bundled or generated data only: nothing here downloads.

Names are resolved lazily so ``import labkit.data`` stays cheap and each pillar owns its own file.
"""

from __future__ import annotations

import importlib
from typing import Any

from labkit.data.core import Split, digits
from labkit.data.xor import XorClusters, xor_clusters

# name -> module that defines it (pillar data sets live in their own files)
_LAZY = {
    "block_digits": "labkit.data.blocks",
    "BlockDigits": "labkit.data.blocks",
    "two_digit_canvas": "labkit.data.blocks",
    "modular_arithmetic": "labkit.data.modular",
    "ModularSplit": "labkit.data.modular",
    "noisy_labels": "labkit.data.noise",
}

__all__ = ["Split", "XorClusters", "digits", "xor_clusters", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labkit.data' has no attribute {name!r}")
