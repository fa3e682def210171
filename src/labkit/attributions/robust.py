"""Projected gradient descent (PGD) adversarial examples, for adversarial training of small models.

Madry et al., 2018, *Towards Deep Learning Models Resistant to Adversarial Attacks*,
https://arxiv.org/abs/1706.06083. Used to train the robust models whose input gradients Shah, Jain &
Netrapalli (2021) compare with those of standard models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labkit import checks
from labkit.attributions._common import (
    check_generator,
    check_logits,
    check_model_input,
    check_nonneg_float,
    check_positive_int,
    check_target,
    evaluating,
    finite_result,
    fits_dtype,
    forward,
)
from labkit.autograd import rand


def _check_clamp(clamp: object, dtype: torch.dtype) -> tuple[float, float] | None:
    if clamp is None:
        return None
    if isinstance(clamp, (str, torch.Tensor)) or not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be None or a pair (low, high) of numbers, got {clamp!r}")
    low = fits_dtype(checks.number(clamp[0], "clamp[0]"), "clamp[0]", dtype)
    high = fits_dtype(checks.number(clamp[1], "clamp[1]"), "clamp[1]", dtype)
    if not low < high:
        raise ValueError(f"clamp must be a range (low, high) with low < high, got ({low}, {high})")
    return low, high


def pgd_perturb(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 7,
    step_size: float | None = None,
    norm: str = "inf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial inputs within the ``eps`` ball (``norm`` "inf" or "2") around ``x`` that raise the
    cross-entropy of the labels ``y``, by ``steps`` of projected (sign / normalized) gradient ascent.

    ``step_size`` defaults to ``2.5 * eps / steps``; ``clamp`` (``low < high``) keeps pixels in range. ``y``
    holds class indices of the model's logits. Only the input is differentiated (parameter ``.grad``
    untouched); the model is evaluated in eval mode and left as found. Returns a detached tensor.
    """
    x = check_model_input(model, x)
    t = check_target(y, x.shape[0], x.device, name="y")
    eps = fits_dtype(check_nonneg_float(eps, "eps"), "eps", x.dtype)
    steps = check_positive_int(steps, "steps")
    if norm not in ("inf", "2"):
        raise ValueError(f"norm must be 'inf' or '2', got {norm!r}")
    clamp = _check_clamp(clamp, x.dtype)
    if not isinstance(random_start, bool):
        raise TypeError(f"random_start must be a bool, got {type(random_start).__name__}")
    gen = check_generator(generator, x.device)
    alpha = 2.5 * eps / steps if step_size is None else check_nonneg_float(step_size, "step_size")
    fits_dtype(alpha, "step_size", x.dtype)
    x = x.detach()
    view = (-1,) + (1,) * (x.ndim - 1)

    def project(delta: torch.Tensor) -> torch.Tensor:
        if norm == "inf":
            return delta.clamp(-eps, eps)
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return delta * (eps / n).clamp(max=1.0).reshape(view)

    delta = torch.zeros_like(x)
    if random_start and eps > 0:
        delta = project((2 * rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * eps)
    with evaluating(model):
        for i in range(steps):
            with torch.enable_grad():
                d = delta.requires_grad_(True)
                xa = x + d if clamp is None else (x + d).clamp(*clamp)
                logits = forward(model, xa)
                if i == 0:  # once: the logits' shape, the labels' range, finite logits
                    check_logits(logits, x.shape[0], t, name="y")
                    finite_result(logits.detach(), "logits", context=" near x")
                loss = F.cross_entropy(logits, t, reduction="sum")
                (g,) = torch.autograd.grad(loss, d)
            if norm == "inf":
                step = g.sign()
            else:
                step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(view)
            delta = project(delta.detach() + alpha * step)
    out = x + delta
    return finite_result((out if clamp is None else out.clamp(*clamp)).detach(), "gradients",
                         context=f" (eps={eps}, step_size={alpha})")
