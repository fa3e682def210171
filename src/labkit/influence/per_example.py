"""Per-example gradients: the gradient of each training example's loss, as one ``(n, P)`` matrix.

Every method of the influence pillar starts here (Koh & Liang, *Understanding Black-box Predictions via
Influence Functions*, arXiv 1703.04730; Grosse et al., *Studying Large Language Model Generalization with
Influence Functions*, arXiv 2308.03296; Pruthi et al., *Estimating Training Data Influence by Tracing
Gradient Descent*, arXiv 2002.08484). The gradients come from ``torch.func``: ``vmap`` over the examples of
``grad`` of the loss of one example, in chunks so that memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, vmap

from labkit import checks
from labkit.autograd import as_batches, even_chunks, resolve_params, train_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# about this many floats of gradient per chunk when chunk_size="auto" (64 MiB in float32)
_AUTO_FLOATS = 16 * 2**20


def check_loss_fn(loss_fn: object) -> LossFn:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    return loss_fn  # type: ignore[return-value]


def checked_data(data: Any, model: nn.Module, name: str = "data") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``as_batches(data)`` with every tensor finite and the inputs in the model's dtype."""
    batches = as_batches(data, name)
    for i, (x, y) in enumerate(batches):
        where = name if len(batches) == 1 else f"{name} batch {i}"
        checks.tensor(x, f"{where} inputs")
        checks.tensor(y, f"{where} targets")
        checks.same_dtype_as_model(x, model, f"{where} inputs")
    return batches


def check_params_finite(model: nn.Module, params: Sequence[torch.Tensor]) -> None:
    for p in params:
        if not bool(torch.isfinite(p.detach()).all()):
            label = next((n for n, q in model.named_parameters() if q is p), "?")
            raise ValueError(f"model parameter {label!r} contains NaN or infinite values")


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[nn.Parameter] | None = None,
    chunk_size: int | str = "auto",
    name: str = "data",
) -> torch.Tensor:
    """The gradient of each example's loss with respect to ``params``: a ``(n, P)`` tensor.

    Row ``i`` is ``∇_θ loss_fn(model(x_i[None]), y_i[None])`` flattened in ``params`` order (all trainable
    parameters of ``model`` by default), so the mean of the rows is the gradient of the mean loss. ``data``
    is an ``(inputs, targets)`` pair or a list of such batches (rows are concatenated in order).
    ``loss_fn(outputs, targets)`` returns the mean loss of a batch, as ``F.cross_entropy`` does.

    Computed with ``torch.func.vmap`` over examples of ``torch.func.grad``, ``chunk_size`` examples at a
    time (``"auto"``: about 64 MiB of gradients per chunk). The model runs in eval mode (per-example batch
    statistics would be meaningless); its parameters, ``.grad``, ``requires_grad``, modes and buffers are
    left as found. The result is detached, in the parameters' dtype and on their device. ``name`` is how errors
    about ``data`` call it (``"train"``, ``"query"``).
    """
    check_loss_fn(loss_fn)
    chosen = resolve_params(model, params)
    check_params_finite(model, chosen)
    batches = checked_data(data, model, name)
    numel = sum(p.numel() for p in chosen)
    if chunk_size == "auto":
        size = max(1, min(1024, _AUTO_FLOATS // max(numel, 1)))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or 'auto', got {chunk_size!r}")
    else:
        size = chunk_size
    names = {id(p): n for n, p in model.named_parameters()}
    wrt_names = [names[id(p)] for p in chosen]
    frozen = {n: p.detach() for n, p in model.named_parameters() if id(p) not in {id(q) for q in chosen}}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    device = chosen[0].device

    def one_loss(wrt: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**frozen, **wrt}, buffers), (x.unsqueeze(0),))
        loss = loss_fn(out, y.unsqueeze(0))
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError("loss_fn must return a scalar tensor (the mean loss of the batch)")
        return loss

    per_example = vmap(grad(one_loss), in_dims=(None, 0, 0))
    wrt = {n: p.detach() for n, p in zip(wrt_names, chosen, strict=True)}
    rows: list[torch.Tensor] = []
    with train_mode(model, False), torch.enable_grad():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            for part in even_chunks(len(x), size):
                try:
                    g = per_example(wrt, x[part], y[part])
                except RuntimeError as exc:
                    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ValueError(f"{name} (inputs {tuple(x.shape)}, targets {tuple(y.shape)}) does not fit the "
                                     f"model and loss_fn: {text}") from exc
                rows.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in wrt_names], dim=1))
    out = torch.cat(rows).detach()
    if not math.isfinite(float(out.sum())) and not bool(torch.isfinite(out).all()):
        raise ValueError("per-example gradients contain NaN or infinite values (check the loss and the data)")
    return out


__all__ = ["per_example_grads"]


def output_hessians(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(N, C, C)``: the Hessian of each example's loss with respect to its own outputs ``(N, C)`` (the middle
    factor of the Gauss–Newton matrix ``Jᵀ H J``), vmapped over examples."""

    def one_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(out.unsqueeze(0), y.unsqueeze(0))

    return vmap(hessian(one_loss))(outputs, targets)
