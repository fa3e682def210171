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

from labkit import checks

OptimizerClass = type[torch.optim.Optimizer]

#: the largest hyper-parameter accepted: torch turns a larger product (lr * weight_decay, lr / bias
#: correction) into "value cannot be converted to type float without overflow" in float32 updates
LARGEST = 1e15
#: non-negative numeric hyper-parameters of torch's optimizers (lr may also be a 1-element tensor)
NON_NEGATIVE = ("lr", "weight_decay", "eps", "momentum", "dampening", "alpha", "lr_decay",
                "initial_accumulator_value", "rho", "lambd", "t0", "max_lr", "min_lr")


def check_hyperparameters(options: dict[str, Any], name: str = "") -> dict[str, Any]:
    """Refuse NaN, infinite, negative or non-numeric optimizer hyper-parameters with an error naming them.

    torch.optim lets ``lr=inf`` and ``weight_decay=inf`` through and words NaN as "Invalid learning rate: nan";
    here every known numeric option is a number in [0, LARGEST] and each of ``betas`` lies in [0, 1).
    Unknown options are left to the optimizer. ``name`` prefixes the argument names (e.g. "param_groups[1].").
    """
    for key in NON_NEGATIVE:
        if key in options:
            checks.number(options[key], f"{name}{key}", low=0.0, high=LARGEST)
    if "betas" in options:
        betas = options["betas"]
        if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}betas must be two numbers in [0, 1), got {betas!r}")
        for beta in betas:
            checks.number(beta, f"{name}betas", low=0.0, high=1.0, high_open=True)
    return options


class GradientFilter(torch.optim.Optimizer):
    """Base class: subclasses implement ``filter(param, grad) -> grad`` (no in-place change of grad)."""

    def __init__(self, params: Iterable[Any],
                 base_optimizer_cls: OptimizerClass = torch.optim.AdamW,
                 **base_kwargs: Any):
        cls = base_optimizer_cls
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError("base_optimizer_cls must be a torch.optim.Optimizer subclass, "
                            f"got {base_optimizer_cls!r}")
        check_hyperparameters(base_kwargs)
        params = list(params)  # may be a generator; per-group options are checked like the keywords
        for i, group in enumerate(params):
            if isinstance(group, dict):
                check_hyperparameters(group, f"params[{i}].")
        self._linked = False
        self.base_optimizer = base_optimizer_cls(params, **base_kwargs)
        self.base_kwargs = dict(base_kwargs)
        super().__init__(self.base_optimizer.param_groups, dict(self.base_optimizer.defaults))
        self._link()

    def _link(self) -> None:
        """Share the base optimizer's groups and state (also after ``load_state_dict``)."""
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self._linked = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the groups are shared), its hyper-parameters checked first."""
        if not getattr(self, "_linked", False):  # torch.optim.Optimizer.__init__ building the shared list
            super().add_param_group(param_group)
            return
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        check_hyperparameters(param_group, "param_group.")
        self.base_optimizer.add_param_group(param_group)

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
        if not isinstance(rescale, bool):
            raise TypeError(f"rescale must be a bool, got {type(rescale).__name__}")
        self.rescale = rescale
        super().__init__(params, base_optimizer_cls, **base_kwargs)

    def filter(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return perpendicular_gradient(param, grad, rescale=self.rescale)


def perpendicular_gradient(weight: torch.Tensor, grad: torch.Tensor, *, rescale: bool = True) -> torch.Tensor:
    """g - (<g, w> / <w, w>) w over the whole tensor; with ``rescale`` scaled back to ||g||.

    A map on the optimizer's hot path: a NaN in ``weight`` or ``grad`` comes out as NaN (never as a finite
    value), and :func:`labkit.training.fit`'s ``on_nonfinite`` sees it in the next loss."""
    checks.tensor(weight, "weight", floating=True, finite=False)
    checks.tensor(grad, "grad", floating=True, finite=False)
    if weight.shape != grad.shape:
        raise ValueError("weight and grad must have the same shape, "
                         f"got {tuple(weight.shape)} and {tuple(grad.shape)}")
    if weight.dtype != grad.dtype:
        raise TypeError(f"grad has dtype {grad.dtype} but weight has {weight.dtype}")
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
        self.alpha = checks.number(ema_alpha, "ema_alpha", low=0.0, high=1.0, high_open=True)
        self.lamb = checks.number(ema_lamb, "ema_lamb", low=0.0, high=LARGEST)
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
