"""The checks every function of the Hessian pillar runs on its inputs, and the one way it runs a model.

* :func:`batches`: ``(inputs, targets)`` data checked once (non-empty, no NaN/inf, not on the ``meta`` device,
  inputs in the model's dtype), each failure a ``ValueError``/``TypeError`` naming ``data``.
* :func:`flat_vector`: a flat floating vector of the right length (no integer vector is rounded on the way).
* :func:`run_model`: ``model(x)`` with the model's buffers replaced by copies (``torch.func.functional_call``),
  so a forward pass in train mode uses batch statistics but never updates the caller's BatchNorm running
  statistics, and a shape mismatch is a ``ValueError`` naming the data instead of torch's "mat1 and mat2".
  Parameters are the model's own, so gradients flow to them.
* :func:`finite_params`: the parameters (and floating buffers) a measurement starts from must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import Batch, as_batches

# words of torch's messages about inputs that do not fit a layer ("mat1 and mat2 shapes cannot be multiplied",
# "Expected 3D (unbatched) or 4D (batched) input", "expected input[1, 2, 5, 5] to have 3 channels", dtypes)
_SHAPE_WORDS = ("shape", "size", "dimension", "dim ", "channel", "dtype", "expected", "mat1")


def all_finite(t: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN/inf. A sum holding NaN or inf is not finite, so one reduction decides the
    common case (about 10x cheaper than ``isfinite(t).all()`` on the digits); a finite tensor whose sum
    overflows is re-checked element by element."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return True
    return math.isfinite(abs(t.sum().item())) or bool(torch.isfinite(t).all())


def finite_tensor(x: Any, name: str) -> torch.Tensor:
    """:func:`labkit.checks.tensor` (a tensor, not on ``meta``) with the cheap finiteness test of :func:`all_finite`."""
    checks.tensor(x, name, finite=False)
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def batches(data: Any, model: Any, name: str = "data") -> list[Batch]:
    """``as_batches(data)`` with every tensor checked: real device, finite, inputs in ``model``'s dtype."""
    out = as_batches(data, name)
    for i, (x, y) in enumerate(out):
        where = name if len(out) == 1 else f"{name} batch {i}"
        finite_tensor(x, f"{where} inputs")
        finite_tensor(y, f"{where} targets")
        checks.same_dtype_as_model(x, model, f"{where} inputs")
    return out


def flat_vector(v: Any, numel: int, name: str = "v") -> torch.Tensor:
    """A flat floating vector of length ``numel`` with finite entries (cheap: one sum in the common case)."""
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point vector (an integer vector would be rounded), got dtype "
                        f"{v.dtype}: convert it, e.g. {name}.float()")
    if v.ndim != 1 or v.shape[0] != numel:
        raise ValueError(f"{name} must be a flat vector of length {numel} (op.numel), got shape {tuple(v.shape)}")
    if v.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device (shapes only, no values): move it to 'cpu' or 'cuda'")
    if not all_finite(v):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def finite_params(model: nn.Module, params: Sequence[torch.Tensor], name: str = "model") -> None:
    """Refuse parameters holding NaN/inf (every product, eigenvalue or surface would be NaN)."""
    for p in params:
        if p.device.type == "meta" or not all_finite(p.detach()):
            label = next((n for n, q in model.named_parameters() if q is p), "?")
            meta = p.device.type == "meta"
            what = "is on the 'meta' device (no values)" if meta else "contains NaN or infinite values"
            raise ValueError(f"{name}'s parameter {label!r} {what}")


def buffer_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s buffers by name (empty for a model without buffers)."""
    return {n: b.clone() for n, b in model.named_buffers() if b is not None}


def run_model(model: nn.Module, x: torch.Tensor, *, name: str = "data", tensors: dict | None = None) -> torch.Tensor:
    """``model(x)`` on copies of its buffers (``tensors``: more replacements, e.g. parameters by name).

    A ``RuntimeError`` from the forward pass (inputs of the wrong size, a missing channel dimension) becomes a
    ``ValueError`` naming ``name`` and the input shape, with torch's message attached.
    """
    swap = buffer_copies(model) if isinstance(model, nn.Module) else {}
    if tensors:
        swap.update(tensors)
    try:
        if swap:
            return torch.func.functional_call(model, swap, (x,), strict=False)
        return model(x)
    except RuntimeError as exc:
        text = str(exc)
        if not any(word in text.lower() for word in _SHAPE_WORDS) or "inplace" in text or "ZeroTensor" in text:
            raise  # not about the inputs' shape or dtype: the model's own error
        raise ValueError(f"{name} inputs of shape {tuple(x.shape)} (dtype {x.dtype}) do not fit the model: "
                         f"{text.splitlines()[0] if text else type(exc).__name__}") from exc


__all__ = ["all_finite", "batches", "buffer_copies", "finite_params", "finite_tensor", "flat_vector", "run_model"]
