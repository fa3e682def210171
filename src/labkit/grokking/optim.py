"""Gradient-filtering optimizer wrappers: ⊥Grad (PerpGrad) and the Grokfast EMA filter.

Each wrapper owns a base optimizer built with *every* keyword it was given (betas, eps, weight decay,
...), shares that optimizer's ``param_groups`` (so schedulers and lr changes reach it) and its
``state_dict``. ``step(closure)`` first evaluates the closure (fresh gradients), then replaces each
gradient by its filtered version for the base optimizer's step, then puts the original gradient
back: ``p.grad`` stays the true gradient for anyone reading it afterwards.

- ⊥Grad: Prieto, Barsbey, Mediano, Birdal (2025), *Grokking at the Edge of Numerical Stability*,
  arXiv:2501.04697, section 6: g_perp = g - (g.w / w.w) w for each weight tensor w, rescaled to
  the norm of g by default, as in the paper's reference code.
- Grokfast-EMA: Lee, Kang, Kim, Lee, Kang (2024), *Grokfast: Accelerated Grokking by Amplifying
  Slow Gradients*, arXiv:2405.20233: mu <- alpha mu + (1 - alpha) g;  g <- g + lamb mu.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

OptimizerClass = type[torch.optim.Optimizer]


class GradientFilter(torch.optim.Optimizer):
    """Base class: subclasses implement ``filter(param, grad) -> grad`` (no in-place change of grad)."""

    def __init__(self, params: Iterable[Any],
                 base_optimizer_cls: OptimizerClass = torch.optim.AdamW,
                 **base_kwargs: Any):
        cls = base_optimizer_cls
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError("base_optimizer_cls must be a torch.optim.Optimizer subclass, "
                            f"got {base_optimizer_cls!r}")
        self.base_optimizer = base_optimizer_cls(params, **base_kwargs)
        self.base_kwargs = dict(base_kwargs)
        super().__init__(self.base_optimizer.param_groups, dict(self.base_optimizer.defaults))
        self._link()

    def _link(self) -> None:
        """Share the base optimizer's groups and state (also after ``load_state_dict``)."""
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def filter(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        originals: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                originals.append((p, p.grad))
                p.grad = self.filter(p, p.grad)
        try:
            self.base_optimizer.step()
        finally:
            for p, g in originals:
                p.grad = g
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base_optimizer.state_dict(), "filter": self.filter_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "base" not in state_dict:
            raise ValueError("state_dict must come from the same kind of wrapper (missing 'base')")
        self.base_optimizer.load_state_dict(state_dict["base"])
        self._link()
        self.load_filter_state(state_dict.get("filter", {}))

    def filter_state(self) -> dict[str, Any]:
        return {}

    def load_filter_state(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer!r})"


class PerpGrad(GradientFilter):
    """⊥Grad: step the base optimizer on the part of each gradient orthogonal to its weight tensor.

    ``PerpGrad(model.parameters(), torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)``.
    ``rescale=True`` keeps the gradient's norm (reference code). Every other keyword (``eps`` included)
    goes to the base optimizer. Prieto et
    al. (2025): removing the naive-loss-minimization direction (scaling the weights up) stops the
    logits from growing until Softmax Collapse, and the delay before generalization disappears.
    """

    def __init__(self, params: Iterable[Any],
                 base_optimizer_cls: OptimizerClass = torch.optim.AdamW,
                 *, rescale: bool = True, **base_kwargs: Any):
        self.rescale = bool(rescale)
        super().__init__(params, base_optimizer_cls, **base_kwargs)

    def filter(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return perpendicular_gradient(param, grad, rescale=self.rescale)


def perpendicular_gradient(weight: torch.Tensor, grad: torch.Tensor, *, rescale: bool = True) -> torch.Tensor:
    """g - (<g, w> / <w, w>) w over the whole tensor; with ``rescale`` scaled back to ||g||."""
    if weight.shape != grad.shape:
        raise ValueError("weight and grad must have the same shape, "
                         f"got {tuple(weight.shape)} and {tuple(grad.shape)}")
    eps = 1e-30  # guards all-zero weights or gradients
    w, g = weight.reshape(-1), grad.reshape(-1)
    g_perp = g - (torch.dot(w, g) / (torch.dot(w, w) + eps)) * w
    if rescale:
        g_perp = g_perp * (g.norm() / (g_perp.norm() + eps))
    return g_perp.reshape_as(grad)


class GrokfastEMA(GradientFilter):
    """Grokfast-EMA: amplify the slow (low-pass) part of the gradient, g + lamb * EMA_alpha(g).

    ``GrokfastEMA(model.parameters(), torch.optim.AdamW, ema_alpha=0.98, ema_lamb=2.0, lr=1e-3)``.
    (``alpha`` and ``lamb`` of the Grokfast paper; prefixed so that a base optimizer's own ``alpha``,
    e.g. RMSprop's, is forwarded.) The EMA is saved by ``state_dict``.
    """

    def __init__(self, params: Iterable[Any],
                 base_optimizer_cls: OptimizerClass = torch.optim.AdamW,
                 *, ema_alpha: float = 0.98, ema_lamb: float = 2.0, **base_kwargs: Any):
        if not 0.0 <= ema_alpha < 1.0:
            raise ValueError(f"ema_alpha must be in [0, 1), got {ema_alpha!r}")
        self.alpha, self.lamb = float(ema_alpha), float(ema_lamb)
        super().__init__(params, base_optimizer_cls, **base_kwargs)
        self._ema: dict[int, torch.Tensor] = {}

    def _index(self) -> dict[int, int]:
        params = [p for group in self.param_groups for p in group["params"]]
        return {id(p): i for i, p in enumerate(params)}

    def filter(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        key = self._index()[id(param)]
        ema = self._ema.get(key)
        ema = grad.detach().clone() if ema is None else ema * self.alpha + grad * (1 - self.alpha)
        self._ema[key] = ema
        return grad + self.lamb * ema

    def filter_state(self) -> dict[str, Any]:
        return {"ema": {k: v.clone() for k, v in self._ema.items()}}

    def load_filter_state(self, state: dict[str, Any]) -> None:
        params = [p for group in self.param_groups for p in group["params"]]
        self._ema = {int(k): v.to(params[int(k)].device, params[int(k)].dtype).clone()
                     for k, v in state.get("ema", {}).items()}
