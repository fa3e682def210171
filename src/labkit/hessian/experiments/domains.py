"""Domain-generalisation experiment: logistic heads trained with gradient and Hessian alignment penalties
(Hemati et al., ICCV 2023) on the spurious-feature toy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.hessian import alignment_penalties
from labkit.hessian.experiments.training import copy_generator
from labkit.training import fit


def logistic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``(N, 1)`` logits against ``{0, 1}`` labels."""
    return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets.float())


@torch.no_grad()
def binary_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``(N, 1)`` logits on the right side of 0 for ``{0, 1}`` labels."""
    return float(((head(x).squeeze(1) > 0).long() == y).float().mean())


@dataclass(frozen=True)
class AlignedHead:
    """A logistic head trained by :func:`train_aligned_heads`, its test-domain and mean training-domain
    accuracy, and its weights on the invariant and the spurious feature."""

    head: nn.Linear
    test: float
    train: float
    w_inv: float
    w_spur: float


def train_aligned_heads(
    train_domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    test_domain: tuple[torch.Tensor, torch.Tensor],
    *,
    methods: Mapping[str, tuple[float, float, int | None]],
    steps: int,
    lr: float,
    generator: torch.Generator | None = None,
) -> dict[str, AlignedHead]:
    """Hemati et al., *Understanding Hessian Alignment for Domain Generalization* (ICCV 2023): for each
    ``name -> (alpha, beta, probes)`` train a zero-initialised logistic head with full-batch GD on
    ``mean loss + alpha * gradient penalty + beta * Hessian penalty`` (:func:`alignment_penalties`; ``probes``
    None: exact Hessians, else Hutchinson probes drawn from a copy of ``generator``'s state)."""
    if not train_domains:
        raise ValueError("train_domains must hold at least one (inputs, targets) pair")
    checks.positive_int(steps, "steps")
    checks.number(lr, "lr", low=0, low_open=True)
    for name, (alpha, beta, probes) in methods.items():
        checks.number(alpha, f"methods[{name!r}] alpha", low=0.0)
        checks.number(beta, f"methods[{name!r}] beta", low=0.0)
        if probes is not None:
            checks.positive_int(probes, f"methods[{name!r}] probes")
    x0 = train_domains[0][0]
    out = {}
    for name, (alpha, beta, probes) in methods.items():
        head = nn.Linear(x0.shape[1], 1).to(x0.device, x0.dtype)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        probe_gen = copy_generator(generator)

        def objective(m: nn.Module, _batch: Any, alpha: float = alpha, beta: float = beta,
                      probes: int | None = probes, probe_gen: torch.Generator | None = probe_gen) -> torch.Tensor:
            loss, grad_pen, hess_pen = alignment_penalties(m, logistic_loss, train_domains, probes=probes,
                                                           generator=probe_gen)
            return loss + alpha * grad_pen + beta * hess_pen

        fit(head, objective, None, optimizer=torch.optim.SGD(head.parameters(), lr=lr), steps=steps, desc=name)
        train = sum(binary_accuracy(head, x, y) for x, y in train_domains) / len(train_domains)
        out[name] = AlignedHead(head, binary_accuracy(head, *test_domain), train, float(head.weight[0, 0].detach()),
                                float(head.weight[0, 1].detach()))
    return out


__all__ = ["AlignedHead", "binary_accuracy", "logistic_loss", "train_aligned_heads"]
