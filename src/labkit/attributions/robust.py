"""Projected gradient descent (PGD) adversarial examples, for adversarial training of small models.

Madry et al., 2018, *Towards Deep Learning Models Resistant to Adversarial Attacks*,
https://arxiv.org/abs/1706.06083. Used to train the robust models whose input gradients Shah, Jain &
Netrapalli (2021) compare with those of standard models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labkit.attributions._common import (
    check_generator,
    check_input,
    check_nonneg_float,
    check_positive_int,
    check_target,
)
from labkit.autograd import rand, train_mode


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

    ``step_size`` defaults to ``2.5 * eps / steps``; ``clamp`` keeps pixels in range. Only the input is
    differentiated (parameter ``.grad`` untouched); the model's modes are restored. Returns a detached tensor.
    """
    x = check_input(x)
    t = check_target(y, x.shape[0], x.device)
    eps = check_nonneg_float(eps, "eps")
    steps = check_positive_int(steps, "steps")
    if norm not in ("inf", "2"):
        raise ValueError(f"norm must be 'inf' or '2', got {norm!r}")
    gen = check_generator(generator, x.device)
    alpha = 2.5 * eps / steps if step_size is None else check_nonneg_float(step_size, "step_size")
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
    with train_mode(model, False):
        for _ in range(steps):
            with torch.enable_grad():
                d = delta.requires_grad_(True)
                xa = x + d if clamp is None else (x + d).clamp(*clamp)
                loss = F.cross_entropy(model(xa), t, reduction="sum")
                (g,) = torch.autograd.grad(loss, d)
            if norm == "inf":
                step = g.sign()
            else:
                step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(view)
            delta = project(delta.detach() + alpha * step)
    out = x + delta
    return (out if clamp is None else out.clamp(*clamp)).detach()
