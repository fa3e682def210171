"""Argument checks shared by every pillar: each failure is a ``ValueError`` or ``TypeError`` whose message
names the argument and says what was expected, so bad input never turns into a silent wrong result or an
error from deep inside torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (bools refused) inside the given bounds; returns it as ``float``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int (bools refused) inside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def positive_int(value: Any, name: str) -> int:
    return integer(value, name, low=1)


def tensor(x: Any, name: str, *, floating: bool = False, finite: bool = True, ndim: int | None = None,
           min_ndim: int | None = None, nonempty: bool = False) -> torch.Tensor:
    """A real tensor on a real device (``meta`` refused), optionally floating, finite, of a given rank."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device (shapes only, no values): move it to 'cpu' or 'cuda'")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if finite and (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of ``model``'s first floating parameter or buffer (None for a parameter-free model)."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return None


def same_dtype_as_model(x: torch.Tensor, model: Any, name: str = "x") -> torch.Tensor:
    """``x`` must have the model's floating dtype (a float64 input to a float32 model is a clear error)."""
    if isinstance(model, nn.Module) and x.is_floating_point():
        dtype = model_dtype(model)
        if dtype is not None and dtype != x.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {dtype}: convert one of "
                            f"them (e.g. {name}.to({dtype}) or model.to({x.dtype}))")
    return x


def class_indices(target: Any, num_classes: int, name: str = "target") -> torch.Tensor:
    """An integer tensor (or int) of class indices in ``[0, num_classes)``."""
    if isinstance(target, bool):
        raise TypeError(f"{name} must be an int or an integer tensor of class indices, got a bool")
    t = torch.as_tensor(target) if isinstance(target, int) else target
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an int or an integer tensor of class indices, got "
                        f"{getattr(t, 'dtype', type(t).__name__)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"{name} must hold class indices in [0, {num_classes}), got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t


def choice(value: Any, name: str, options: Sequence[Any]) -> Any:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value
