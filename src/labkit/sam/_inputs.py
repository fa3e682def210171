"""Input checks shared by the SAM pillar's measurements and experiments (on top of :mod:`labkit.checks`).

:func:`check_data` turns the confusing errors a bad ``(inputs, targets)`` pair would raise deep inside torch
("mat1 and mat2 ...", "Target 5 is out of bounds", a NaN loss turned into 0.0) into a ``ValueError`` or
``TypeError`` that names the argument: the pair is checked (tensors, not on ``meta``, finite, inputs in the
model's dtype) and the model is probed with a forward pass and the loss on the first two rows, in eval
mode and without gradients, leaving every mode, buffer and parameter as found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit import checks
from labkit.autograd import preserve_model, train_mode

# Losses whose integer targets are class indices into dimension 1 of the outputs (ignore_index -100 allowed).
_CLASS_LOSSES: tuple[Any, ...] = (F.cross_entropy, F.nll_loss)
_CLASS_LOSS_TYPES: tuple[type[nn.Module], ...] = (nn.CrossEntropyLoss, nn.NLLLoss)


def is_class_loss(loss_fn: object) -> bool:
    return any(loss_fn is f for f in _CLASS_LOSSES) or isinstance(loss_fn, _CLASS_LOSS_TYPES)


def check_loss_fn(loss_fn: object, name: str = "loss_fn") -> Callable[..., torch.Tensor]:
    if not callable(loss_fn):
        raise TypeError(f"{name} must be callable as {name}(outputs, targets) -> mean loss, "
                        f"got {type(loss_fn).__name__}")
    return loss_fn  # type: ignore[return-value]


def check_finite_params(params: Sequence[torch.Tensor], name: str = "model") -> None:
    """Refuse NaN/inf weights: every measurement of them would be NaN (or a silent 0)."""
    for i, p in enumerate(params):
        if p.device.type == "meta":
            raise ValueError(f"{name} has parameters on the 'meta' device (shapes only, no values)")
        if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all()):
            raise ValueError(f"{name} has NaN or infinite values in its parameters (parameter {i}, "
                             f"shape {tuple(p.shape)})")


def check_data(model: nn.Module, data: Any, name: str = "data", *, loss_fn: Any = None,
               classes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One non-empty, finite ``(inputs, targets)`` pair that ``model`` (and ``loss_fn``) accept.

    Integer targets are checked to be class indices of the model's outputs when ``loss_fn`` is a
    cross-entropy / NLL loss or ``classes=True``. Returns ``(inputs, targets)``.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(f"{name} must be an (inputs, targets) pair of tensors, got {type(data).__name__}")
    x = checks.tensor(data[0], f"{name}[0] (inputs)", min_ndim=1)
    y = checks.tensor(data[1], f"{name}[1] (targets)", min_ndim=1)
    if len(x) == 0:
        raise ValueError(f"{name} is empty: {name}[0] (inputs) has shape {tuple(x.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{name} must have as many targets as inputs, got {len(x)} inputs and {len(y)} targets")
    checks.same_dtype_as_model(x, model, f"{name}[0]")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name}[1] (targets) must be class indices or real numbers, got dtype {y.dtype}")
    with torch.no_grad(), preserve_model(model, params=False), train_mode(model, False):
        try:
            out = model(x[:2])
        except (RuntimeError, IndexError, ValueError, TypeError) as err:
            raise ValueError(f"{name}[0] (inputs of shape {tuple(x.shape)}, dtype {x.dtype}) does not fit "
                             f"the model: {err}") from err
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor of outputs, got {type(out).__name__}")
        integer_targets = not y.is_floating_point()
        if integer_targets and (classes or is_class_loss(loss_fn)) and out.ndim >= 2:
            ignore = getattr(loss_fn, "ignore_index", -100) if loss_fn is not None else None
            labels = y if ignore is None else y[y != ignore]
            checks.class_indices(labels, out.shape[1], f"{name}[1] (targets)")
        if loss_fn is None:
            return x, y
        try:
            loss = loss_fn(out, y[:2])
        except (RuntimeError, IndexError, ValueError) as err:
            raise ValueError(f"{name}[1] (targets of shape {tuple(y.shape)}, dtype {y.dtype}) does not fit the "
                             f"model's outputs of shape (N, {', '.join(map(str, out.shape[1:]))}) under loss_fn: "
                             f"{err}") from err
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"loss_fn must return the mean loss as a one-element tensor, got "
                        f"{type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}")
    if not math.isfinite(float(loss)):
        raise ValueError(f"loss_fn returned {float(loss)} on the first rows of {name} at the model's weights: "
                         "the loss must be finite to be measured")
    return x, y


def optional_positive_int(value: object, name: str) -> int | None:
    return None if value is None else checks.positive_int(value, name)


def optional_number(value: object, name: str, **bounds: Any) -> float | None:
    return None if value is None else checks.number(value, name, **bounds)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def _is_real(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point())


def check_numeric_options(options: dict[str, Any], where: str = "", *, reference: dict[str, Any] | None = None,
                          limit: float = math.inf) -> None:
    """Every real-number option (and each number of a tuple such as ``betas``) must be finite and within
    ``+-limit`` (what the parameters' dtype can hold); an option whose default in ``reference`` is a number
    must be one. Ranges are left to the optimizer that takes them."""
    for key, value in options.items():
        if key == "params":
            continue
        label = f"{where}{key}"
        default = (reference or {}).get(key)
        if _is_real(default) and not _is_real(value):
            raise TypeError(f"{label} must be a real number, got {type(value).__name__}")
        values = list(enumerate(value)) if isinstance(value, (tuple, list)) else [(None, value)]
        for i, v in values:
            if _is_real(v):
                name = label if i is None else f"{label}[{i}]"
                number = checks.number(v, name)
                if abs(number) > limit:
                    raise ValueError(f"{name}={number:g} overflows the parameters' dtype (largest value {limit:g})")


def check_group(group: dict[str, Any], where: str, reference: dict[str, Any] | None = None) -> None:
    """SAM's options of one parameter group (``rho``, ``adaptive``, ``adaptive_eta``) and every other number
    in it (``lr``, ``momentum``, ``betas``...) finite; ``rho``, ``adaptive_eta`` and ``lr`` >= 0."""
    group["rho"] = checks.number(group["rho"], f"{where}['rho'] (rho)", low=0)
    group["adaptive_eta"] = checks.number(group["adaptive_eta"], f"{where}['adaptive_eta'] (adaptive_eta)", low=0)
    check_bool(group["adaptive"], f"{where}['adaptive'] (adaptive)")
    given = group.get("params")
    given = [given] if isinstance(given, torch.Tensor) else given if isinstance(given, (list, tuple)) else []
    params = [p for p in given if isinstance(p, torch.Tensor) and p.is_floating_point()]
    check_options(group, where, reference=reference, dtype=params[0].dtype if params else None)


def check_options(options: dict[str, Any], where: str = "", *, reference: dict[str, Any] | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """The base optimizer's numbers: finite, of the right kind (see ``reference``), representable in
    ``dtype``, and ``lr >= 0``."""
    limit = torch.finfo(dtype).max if dtype is not None else math.inf
    check_numeric_options(options, where=f"{where}: " if where else "", reference=reference, limit=limit)
    if _is_real(options.get("lr")):
        checks.number(options["lr"], f"{where + ': ' if where else ''}lr", low=0)


def optimizer_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of an optimizer class's constructor (what its numbers should look like)."""
    import inspect

    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
