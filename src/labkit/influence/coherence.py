"""Gradient coherence and winsorized gradient averaging.

Chatterjee and Zielinski, *On the Generalization Mystery in Deep Learning* (arXiv 2203.10036): the
per-example gradients ``g_1..g_m`` of real data point in common directions early in training ("coherent
gradients"), those of randomly labelled data do not. The coherence metric is

    α = ‖E_i g_i‖² / E_i ‖g_i‖²,

which is 1 when all gradients are equal and ``α⊥ = 1/m`` for ``m`` mutually orthogonal gradients of equal norm;
the paper reports ``α / α⊥`` (the ratio is about 1 for orthogonal and m for identical gradients).

Their suppression experiment replaces the mean gradient by a robust average that weakens directions
supported by few examples: *winsorized* averaging clips, coordinate by coordinate, the ``c`` largest and ``c``
smallest per-example values to the next value inward before averaging (Chatterjee, *Coherent Gradients*,
arXiv 2002.10657). :class:`Winsorized` wraps a torch optimizer to step along that average.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from labkit.influence.per_example import check_loss_fn, per_example_grads


class Coherence(NamedTuple):
    """``alpha = ‖mean g‖² / mean ‖g‖²``, ``alpha_perp = 1/m`` (orthogonal gradients of equal norm) and
    ``ratio = alpha / alpha_perp`` (1 for orthogonal gradients, m for identical ones)."""

    alpha: float
    alpha_perp: float
    ratio: float


def _check_grads(grads: object) -> torch.Tensor:
    if not isinstance(grads, torch.Tensor) or grads.ndim != 2:
        raise TypeError("grads must be a 2-D tensor (m examples, P parameters), got "
                        + (f"shape {tuple(grads.shape)}" if isinstance(grads, torch.Tensor) else type(grads).__name__))
    if grads.shape[0] < 1 or grads.shape[1] < 1:
        raise ValueError(f"grads must have at least one example and one parameter, got shape {tuple(grads.shape)}")
    if not bool(torch.isfinite(grads).all()):
        raise ValueError("grads contain NaN or infinite values")
    return grads


def gradient_coherence(grads: torch.Tensor) -> Coherence:
    """The coherence of ``m`` per-example gradients (rows of ``grads``), as Chatterjee & Zielinski
    (arXiv 2203.10036, Sec. 4) define it: ``α = ‖mean_i g_i‖² / mean_i ‖g_i‖²``, ``α⊥ = 1/m``, ratio ``α/α⊥``.
    Computed in float64. All-zero gradients have no direction: a ``ValueError``."""
    g = _check_grads(grads).double()
    m = g.shape[0]
    mean_sq = float((g * g).sum(dim=1).mean())
    if mean_sq == 0.0:
        raise ValueError("grads are all zero: coherence is undefined")
    alpha = float(g.mean(dim=0).pow(2).sum()) / mean_sq
    return Coherence(alpha=alpha, alpha_perp=1.0 / m, ratio=alpha * m)


def winsorized_mean(grads: torch.Tensor, c: int) -> torch.Tensor:
    """The coordinate-wise winsorized mean of the rows of ``grads`` ``(m, P) -> (P,)``: in each coordinate the
    ``c`` largest values are set to the (c+1)-th largest and the ``c`` smallest to the (c+1)-th smallest,
    then the m values are averaged. ``c = 0`` is the plain mean; ``c`` must be below ``m / 2``."""
    g = _check_grads(grads)
    if isinstance(c, bool) or not isinstance(c, int) or c < 0:
        raise ValueError(f"c must be a non-negative int (values clipped at each end), got {c!r}")
    m = g.shape[0]
    if 2 * c >= m:
        raise ValueError(f"c must be below m/2 = {m / 2} (m = {m} examples), got {c}")
    if c == 0:
        return g.mean(dim=0)
    high = torch.topk(g, c + 1, dim=0).values[c]                   # the (c+1)-th largest of each coordinate
    low = torch.topk(g, c + 1, dim=0, largest=False).values[c]     # the (c+1)-th smallest
    return torch.minimum(torch.maximum(g, low), high).mean(dim=0)


def coherence_along(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], data: Any,
                    snapshots: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[int, Coherence]:
    """The coherence of the per-example gradients of ``data`` at each training snapshot: ``{step: Coherence}``
    for ``snapshots`` mapping steps to state dicts of ``model`` (as ``fit(..., snapshots=...)`` keeps them in
    ``history.snapshots``). Each state is loaded into a copy; ``model`` is left as found."""
    import copy

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(snapshots, Mapping) or not snapshots:
        raise TypeError("snapshots must be a non-empty mapping {step: state_dict}, e.g. history.snapshots")
    probe = copy.deepcopy(model)
    out = {}
    for step in sorted(snapshots):
        probe.load_state_dict(snapshots[step])
        out[int(step)] = gradient_coherence(per_example_grads(probe, loss_fn, data))
    return out


class Winsorized(torch.optim.Optimizer):
    """A torch optimizer that steps ``base_optimizer_cls`` along the winsorized mean of the per-example
    gradients of the current batch instead of the mean gradient (Chatterjee & Zielinski, arXiv 2203.10036,
    the suppression experiments; Chatterjee, arXiv 2002.10657).

    ``Winsorized(model, torch.optim.SGD, loss_fn=F.cross_entropy, c=2, lr=0.1)``; train it with
    ``labkit.training.fit(model, opt.loss, data, optimizer=opt, ...)``: ``opt.loss(model, batch)`` returns the
    mean loss and remembers the batch, and ``step(closure)`` runs the closure (so the loss is logged), then
    recomputes that batch's per-example gradients (``per_example_grads``, the model in eval mode, so models
    with BatchNorm or dropout are refused) and writes their winsorized mean into ``.grad`` before the base step.
    """

    def __init__(self, model: nn.Module, base_optimizer_cls: type[torch.optim.Optimizer], *,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], c: int, **base_kwargs: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in model.modules()):
            raise ValueError("model must not contain BatchNorm or Dropout: per-example gradients run in eval mode")
        if not (isinstance(base_optimizer_cls, type) and issubclass(base_optimizer_cls, torch.optim.Optimizer)):
            raise TypeError(f"base_optimizer_cls must be a torch.optim.Optimizer subclass, got {base_optimizer_cls!r}")
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"c must be a non-negative int (values clipped at each end), got {c!r}")
        self.loss_fn = check_loss_fn(loss_fn)
        self.model, self.c = model, c
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        super().__init__(self.params, {"c": c})
        self.base_optimizer = base_optimizer_cls(self.params, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The ``fit`` loss: ``loss_fn(model(x), y)`` of the batch, remembered for :meth:`step`."""
        if model is not self.model:
            raise ValueError("Winsorized.loss got another model than the one the optimizer was built on")
        x, y = batch
        self._batch = (x, y)
        return self.loss_fn(model(x), y)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("Winsorized.step needs a closure that calls opt.loss(model, batch) (as fit passes)")
        self._batch = None
        with torch.enable_grad():
            loss = closure()
        if self._batch is None:
            raise ValueError("the closure did not call opt.loss(model, batch): pass opt.loss as fit's loss_fn")
        if self.c == 0:                       # the plain mean: the closure's gradient already is it
            self.base_optimizer.step()
            return loss
        m = len(self._batch[0])
        c = min(self.c, (m - 1) // 2)  # a short last batch cannot clip more than it has
        grads = per_example_grads(self.model, self.loss_fn, self._batch, params=self.params)
        robust = winsorized_mean(grads, c)
        offset = 0
        for p in self.params:
            p.grad = robust[offset:offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        self.base_optimizer.step()
        return loss


__all__ = ["Coherence", "Winsorized", "coherence_along", "gradient_coherence", "winsorized_mean"]
