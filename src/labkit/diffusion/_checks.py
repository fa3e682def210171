"""Argument checks and the model-state guard shared by the diffusion pillar (on top of :mod:`labkit.checks`).

* :func:`samples`: a real, finite, non-empty batch ``(N, ...)`` (optionally ``(N, dim)``), on a real device.
* :func:`labels_for`: a class label (int or ``(N,)`` integer tensor) checked against the classes a
  denoiser or classifier knows, so an out-of-range label is a ``ValueError`` naming ``label`` and the
  number of classes instead of torch's "index out of range".
* :func:`evaluating`: every ``nn.Module`` among the callables (or behind a bound method) runs in eval
  mode and is left as found (parameters, ``.grad``, ``requires_grad``, every submodule's mode, buffers):
  a measurement never updates BatchNorm running statistics nor draws dropout masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import preserve_model, train_mode


def samples(x: Any, name: str, *, dim: int | None = None, ndim: int | None = None, min_n: int = 1,
            model: Any = None) -> torch.Tensor:
    """A floating tensor ``(N, ...)`` with ``N >= min_n``, finite, not on ``meta``; ``(N, dim)`` when ``dim``
    is given; with ``model`` (an ``nn.Module``) also of the model's dtype."""
    checks.tensor(x, name, floating=True, finite=False, min_ndim=2 if ndim is None else None, ndim=ndim)
    if x.shape[0] < min_n:
        raise ValueError(f"{name} must hold at least {min_n} sample(s) along its first dimension, got shape "
                         f"{tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if dim is not None and x[0].numel() != dim:
        raise ValueError(f"{name} must have {dim} features per sample, got shape {tuple(x.shape)}")
    checks.tensor(x, name)  # finite
    module = owner(model)
    if module is not None:
        checks.same_dtype_as_model(x, module, name)
    return x


def owner(fn: Any) -> nn.Module | None:
    """The ``nn.Module`` behind ``fn``: the module itself or the object of a bound method (else None)."""
    if isinstance(fn, nn.Module):
        return fn
    target = getattr(fn, "__self__", None)
    return target if isinstance(target, nn.Module) else None


def num_classes_of(fn: Any) -> int | None:
    """The number of classes a conditional denoiser knows (``num_classes`` of it or of its bound object)."""
    for obj in (fn, getattr(fn, "__self__", None)):
        n = getattr(obj, "num_classes", None) if obj is not None else None
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def labels_for(label: Any, n: int, *, num_classes: int | None, of: str = "denoiser",
               device: torch.device | None = None) -> torch.Tensor:
    """``label`` (an int or an integer tensor of shape () or (n,)) as a long tensor of shape (n,), each a
    class index in ``[0, num_classes)`` (``>= 0`` when the number of classes is unknown)."""
    if isinstance(label, bool) or (isinstance(label, torch.Tensor) and label.dtype == torch.bool):
        raise TypeError("label must be an int or an integer tensor of class indices, got a bool")
    if isinstance(label, torch.Tensor):
        checks.tensor(label, "label", finite=False)
    elif not isinstance(label, int):
        raise TypeError(f"label must be an int or an integer tensor of class indices, got {type(label).__name__}")
    lab = torch.as_tensor(label, device=device)
    if lab.is_floating_point() or lab.is_complex():
        raise TypeError(f"label must be an int or an integer tensor of class indices, got dtype {lab.dtype}")
    if lab.ndim == 0:
        lab = lab.expand(n)
    if lab.shape != (n,):
        raise ValueError(f"label must be an int or a tensor of shape ({n},), got shape {tuple(lab.shape)}")
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes}) (the {of} has {num_classes} classes)" if num_classes is not None else ">= 0"
        raise ValueError(f"label must be a class index in {bound}, got values in [{lo}, {hi}]")
    return lab.long()


_SHAPE_ERRORS = ("shapes cannot be multiplied", "size mismatch", "must match the size", "Expected size",
                 "expected input", "to have", "input channels")


def call(fn: Any, what: str, x: torch.Tensor, *args: Any) -> Any:
    """``fn(x, *args)``; torch's shape errors from inside a model ("mat1 and mat2 shapes cannot be
    multiplied"...) become a ``ValueError`` naming ``x`` and its shape."""
    try:
        return fn(x, *args)
    except RuntimeError as err:
        if any(s in str(err) for s in _SHAPE_ERRORS):
            raise ValueError(f"x has shape {tuple(x.shape)}, which does not fit the {what} (wrong feature size?): {err}"
                             ) from err
        raise


def finite_output(out: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A callable's output: a tensor (of ``like``'s shape when given) without NaN or inf."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
    if like is not None and out.shape != like.shape:
        raise ValueError(f"{name} returned shape {tuple(out.shape)} for input shape {tuple(like.shape)}")
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} returned NaN or infinite values")
    return out


@contextlib.contextmanager
def evaluating(*fns: Any) -> Iterator[None]:
    """Run every ``nn.Module`` among ``fns`` (or behind a bound method) in eval mode for the block and leave
    it as found afterwards (:func:`labkit.autograd.preserve_model`)."""
    with contextlib.ExitStack() as stack:
        seen: set[int] = set()
        for fn in fns:
            module = owner(fn)
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                stack.enter_context(preserve_model(module))
                stack.enter_context(train_mode(module, False))
        yield
