"""Old import paths of names that moved to their pillar: they resolve with a ``DeprecationWarning``."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that forwards each name in ``moved`` to its new module, with a warning.

    Only for names that used to live in ``module``; new code imports from the new place.
    """

    def __getattr__(name: str) -> Any:
        if name in moved:
            warnings.warn(f"{module}.{name} moved to {moved[name]}.{name}; import it from there",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(moved[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
