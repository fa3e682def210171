"""Gradient leakage: recover a training example from its shared gradient, and the pruning defense.

Deep Leakage from Gradients (Zhu, Liu and Han, NeurIPS 2019, arXiv 1906.08935): given the gradient
``∇W = ∂ℓ(F(x, W), y)/∂W`` that a client shares, find a dummy input ``x'`` whose gradient matches it,

    x'* = argmin_x' ‖∇_W ℓ(F(x', W), y') − ∇W‖²,

by L-BFGS on ``x'`` (the paper's optimizer). The label comes first, in closed form, from the last layer's
gradient as in iDLG (Zhao, Mo and Jiang, 2020, arXiv 2001.02610): with cross-entropy on one example, the
gradient of the last linear layer's row ``c`` is ``(p_c − [c = y])·h`` with ``h`` the activations it reads;
when ``h ≥ 0`` (sigmoid, ReLU) only the true label's row is ≤ 0, so the label is the row with the smallest
sum. The defense of the paper's Sec. 5 is gradient pruning: share the gradient with its smallest-magnitude
entries set to zero (:func:`prune_gradients`).

* :func:`gradient_inversion` -> :class:`Inversion` (x, label, grad_distance, history)
* :func:`label_from_gradients`: iDLG's label
* :func:`gradient_distance`: ``Σ_k ‖g_k − t_k‖²`` over parameter tensors (DLG's objective)
* :func:`prune_gradients`: zero the ``fraction`` of entries with the smallest ``|g|``
* :func:`pruning_defense` -> :class:`DefenseSweep`: the attack on each example's pruned gradient, per fraction
* :func:`sigmoid_mlp`: the small sigmoid network of the experiments (the paper's LeNet uses sigmoids)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from labkit.autograd import check_generator, check_module, preserve_model, randn, resolve_params

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OPTIMIZERS = ("lbfgs", "adam")


class Inversion(NamedTuple):
    """What :func:`gradient_inversion` recovered: the input ``x`` (shape ``x_shape``, detached), the
    ``label`` (LongTensor of shape ``(x_shape[0],)``), the final ``grad_distance`` (a float, DLG's objective at
    ``x``) and ``history`` (the objective after each optimizer step, a 1-D tensor of length ``steps``)."""

    x: torch.Tensor
    label: torch.Tensor
    grad_distance: float
    history: torch.Tensor


def _check_grads(grads: object, name: str) -> list[torch.Tensor]:
    if isinstance(grads, torch.Tensor) or not isinstance(grads, Sequence) or not grads:
        raise TypeError(f"{name} must be a non-empty sequence of tensors (one per parameter), "
                        f"got {type(grads).__name__}")
    out = []
    for i, g in enumerate(grads):
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(g).__name__}")
        if not torch.isfinite(g).all():
            raise ValueError(f"{name}[{i}] contains NaN or inf")
        out.append(g.detach())
    return out


def gradient_distance(grads: Sequence[torch.Tensor], target_grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's objective ``Σ_k ‖grads[k] − target_grads[k]‖²`` (a scalar tensor, differentiable in ``grads``)."""
    if len(grads) != len(target_grads):
        raise ValueError(f"grads and target_grads must have as many tensors, got {len(grads)} and {len(target_grads)}")
    total = grads[0].new_zeros(())
    for i, (g, t) in enumerate(zip(grads, target_grads, strict=True)):
        if g.shape != t.shape:
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but target_grads[{i}] has {tuple(t.shape)}")
        total = total + ((g - t) ** 2).sum()
    return total


def label_from_gradients(target_grads: Sequence[torch.Tensor], *, num_classes: int) -> int:
    """iDLG's label of a single example: the row with the smallest sum in the gradient of the last linear
    layer's weight (the last 2-D tensor with ``num_classes`` rows).

    Exact for cross-entropy on one example when the last layer reads non-negative activations (sigmoid,
    ReLU): that row is ``(p_y − 1)·h ≤ 0`` and every other row ``p_c·h ≥ 0``.
    """
    grads = _check_grads(target_grads, "target_grads")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    for g in reversed(grads):
        if g.ndim == 2 and g.shape[0] == num_classes:
            return int(g.sum(dim=1).argmin())
    raise ValueError(f"target_grads holds no 2-D gradient with num_classes={num_classes} rows "
                     "(the last linear layer's weight, whose rows iDLG reads)")


def prune_gradients(grads: Sequence[torch.Tensor], fraction: float, *, per_layer: bool = False) -> list[torch.Tensor]:
    """The defense of DLG's Sec. 5: set the ``fraction`` of gradient entries with the smallest magnitudes to 0.

    ``fraction`` in [0, 1]: ``round(fraction · n)`` entries are zeroed, chosen over all tensors together
    (``per_layer=False``) or within each tensor. Ties at the threshold are broken by position, so exactly that
    many entries are zeroed. Returns new tensors; ``grads`` is left as found.
    """
    tensors = _check_grads(grads, "grads")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1] (the share of entries to zero), got {fraction!r}")

    def pruned(flat: torch.Tensor) -> torch.Tensor:
        k = int(round(float(fraction) * flat.numel()))
        out = flat.clone()
        if k > 0:
            out[flat.abs().argsort(stable=True)[:k]] = 0
        return out

    if per_layer:
        return [pruned(g.reshape(-1)).view_as(g) for g in tensors]
    flat = pruned(torch.cat([g.reshape(-1) for g in tensors]))
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in tensors]), tensors, strict=True)]


def _as_label(label: object, batch: int, num_classes: int, device: torch.device) -> torch.Tensor:
    if isinstance(label, bool):
        raise TypeError("label must be an int, a LongTensor of shape (batch,) or None, got bool")
    if isinstance(label, int):
        label = torch.full((batch,), label, dtype=torch.long)
    if not isinstance(label, torch.Tensor) or label.dtype != torch.long or label.shape != (batch,):
        raise TypeError(f"label must be an int, a LongTensor of shape ({batch},) or None, got {label!r}")
    if ((label < 0) | (label >= num_classes)).any():
        raise ValueError(f"label must lie in 0..{num_classes - 1}, got {label.tolist()}")
    return label.to(device)


def gradient_inversion(
    model: nn.Module,
    loss_fn: LossFn,
    target_grads: Sequence[torch.Tensor],
    *,
    x_shape: Sequence[int],
    num_classes: int,
    steps: int,
    generator: torch.Generator | None = None,
    params: Sequence[torch.Tensor] | None = None,
    label: int | torch.Tensor | None = None,
    optimizer: str = "lbfgs",
    lr: float | None = None,
) -> Inversion:
    """Deep Leakage from Gradients (Zhu et al., 2019, arXiv 1906.08935) with iDLG's label.

    ``target_grads`` is the shared gradient, one tensor per parameter of ``params`` (default: the model's
    trainable parameters, in ``model.parameters()`` order) of the mean loss ``loss_fn(model(x), y)``. The label
    is read from the last layer's gradient (:func:`label_from_gradients`, one example) unless ``label`` is
    given; then a dummy input of shape ``x_shape`` (standard normal from ``generator``) is optimized for
    ``steps`` steps of ``optimizer`` (``"lbfgs"``, the paper's choice: up to 20 iterations with a strong-Wolfe
    line search per step, ``lr`` 1 by default; or ``"adam"``, ``lr`` 0.1) to minimize :func:`gradient_distance`.
    Returns the input with the smallest distance seen. The model (parameters, ``.grad``, modes, buffers) is
    left as found.
    """
    check_module(model)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable (outputs, targets) -> mean loss, got {type(loss_fn).__name__}")
    chosen = resolve_params(model, params)
    targets = _check_grads(target_grads, "target_grads")
    if len(targets) != len(chosen):
        raise ValueError(f"target_grads must hold one tensor per parameter ({len(chosen)}), got {len(targets)}")
    for i, (t, p) in enumerate(zip(targets, chosen, strict=True)):
        if t.shape != p.shape:
            raise ValueError(f"target_grads[{i}] has shape {tuple(t.shape)}, its parameter {tuple(p.shape)}")
    shape = tuple(x_shape) if isinstance(x_shape, (tuple, list, torch.Size)) else None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"x_shape must be a non-empty sequence of positive ints (batch first), got {x_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if lr is None:
        lr = 1.0 if optimizer == "lbfgs" else 0.1
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    check_generator(generator)
    device = chosen[0].device
    if label is None:
        if shape[0] != 1:
            raise ValueError(f"the label is read from the gradient for one example only (x_shape[0] == 1), "
                             f"got x_shape[0] = {shape[0]}: pass label= for a batch")
        label = label_from_gradients(targets, num_classes=num_classes)
    y = _as_label(label, shape[0], num_classes, device)
    targets = [t.to(device=device, dtype=p.dtype) for t, p in zip(targets, chosen, strict=True)]

    with preserve_model(model):
        for p in chosen:
            p.requires_grad_(True)
        dummy = randn(shape, generator=generator, device=device, dtype=chosen[0].dtype).requires_grad_(True)

        def objective(create_graph: bool = True) -> torch.Tensor:
            grads = torch.autograd.grad(loss_fn(model(dummy), y), chosen, create_graph=create_graph,
                                        allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, chosen, strict=True)]
            return gradient_distance(grads, targets)

        if optimizer == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS([dummy], lr=lr, max_iter=20, history_size=100,
                                                           line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.Adam([dummy], lr=lr)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = objective()
            (dummy.grad,) = torch.autograd.grad(value, [dummy])
            return value.detach()

        best_x, best = dummy.detach().clone(), float(objective(False).detach())
        if not math.isfinite(best):
            raise FloatingPointError("the gradient distance at the initial dummy input is NaN or inf")
        history = []
        for _ in range(steps):
            opt.step(closure)
            value = float(objective(False).detach())
            history.append(value)
            if not math.isfinite(value):
                break  # diverged: keep the best input seen so far
            if value < best:
                best, best_x = value, dummy.detach().clone()
        history += [history[-1]] * (steps - len(history))
    return Inversion(x=best_x, label=y.detach().clone(), grad_distance=best,
                     history=torch.tensor(history, dtype=torch.float64))


class DefenseSweep(NamedTuple):
    """What :func:`pruning_defense` measured, for ``k`` examples and ``f`` pruning fractions: ``fractions``
    (f,), the recovered inputs ``x`` (k, f, *input shape), the ``labels`` read from each pruned gradient (k, f),
    the mean squared pixel error ``mse`` (k, f), the largest pixel error ``max_error`` (k, f) and the final
    ``grad_distance`` (k, f) of each attack."""

    fractions: torch.Tensor
    x: torch.Tensor
    labels: torch.Tensor
    mse: torch.Tensor
    max_error: torch.Tensor
    grad_distance: torch.Tensor


def example_gradient(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                     params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The gradient a client shares: ``∂ loss_fn(model(x), y) / ∂ params`` (detached; the model left as found)."""
    check_module(model)
    chosen = resolve_params(model, params)
    with preserve_model(model):
        grads = torch.autograd.grad(loss_fn(model(x), y), chosen, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, chosen, strict=True)]


def pruning_defense(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    fractions: Sequence[float],
    num_classes: int,
    steps: int,
    generator: torch.Generator | None = None,
    per_layer: bool = False,
    optimizer: str = "lbfgs",
) -> DefenseSweep:
    """DLG's defense experiment (Sec. 5 of arXiv 1906.08935): for each example of ``data = (inputs, targets)``
    (one row each), share its gradient pruned by :func:`prune_gradients` at each of ``fractions`` and run
    :func:`gradient_inversion` on it (label from the pruned gradient, as iDLG). For one example, every fraction
    starts from the same dummy input (the generator's state is replayed), so fractions are compared paired.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(f"data must be an (inputs, targets) pair of tensors, got {type(data).__name__}")
    inputs, targets = data
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError(f"data must hold as many targets as inputs (at least one), "
                         f"got {len(inputs)} and {len(targets)}")
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or not fractions:
        raise TypeError(f"fractions must be a non-empty sequence of numbers in [0, 1], got {fractions!r}")
    check_generator(generator)
    rows = []
    for i in range(len(inputs)):
        x, y = inputs[i : i + 1], targets[i : i + 1]
        grads = example_gradient(model, loss_fn, x, y)
        state = None if generator is None else generator.get_state()
        row = []
        for fraction in fractions:
            if generator is not None:
                generator.set_state(state)
            inv = gradient_inversion(model, loss_fn, prune_gradients(grads, fraction, per_layer=per_layer),
                                     x_shape=tuple(x.shape), num_classes=num_classes, steps=steps,
                                     generator=generator, optimizer=optimizer)
            row.append(inv)
        rows.append(row)
    xs = torch.stack([torch.cat([inv.x for inv in row]) for row in rows])
    err = xs - inputs.detach().unsqueeze(1)
    dims = tuple(range(2, err.ndim))
    return DefenseSweep(
        fractions=torch.tensor([float(f) for f in fractions], dtype=torch.float64),
        x=xs, labels=torch.tensor([[int(inv.label[0]) for inv in row] for row in rows]),
        mse=(err ** 2).mean(dim=dims).double(), max_error=err.abs().amax(dim=dims).double(),
        grad_distance=torch.tensor([[inv.grad_distance for inv in row] for row in rows], dtype=torch.float64))


def sigmoid_mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """``Linear -> Sigmoid`` blocks and a linear head: the smooth, twice-differentiable network DLG attacks
    (the paper replaces LeNet's ReLUs by sigmoids so that the gradient-matching objective is smooth)."""
    sizes = [in_features, *hidden]
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in [*sizes, num_classes]):
        raise ValueError(f"layer sizes must be positive ints, got in={in_features!r}, hidden={list(hidden)!r}, "
                         f"num_classes={num_classes!r}")
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], num_classes))


__all__ = ["OPTIMIZERS", "DefenseSweep", "Inversion", "example_gradient", "gradient_distance", "gradient_inversion",
           "label_from_gradients", "prune_gradients", "pruning_defense", "sigmoid_mlp"]
