"""Domain-generalisation experiment: logistic heads trained with the gradient and Hessian alignment penalties
of Hemati et al. (ICCV 2023, arXiv:2308.11778) on the spurious-feature toy, their weights chosen on a
held-out validation domain."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.hessian import alignment_penalties, hgp_penalties, hutchinson_penalties
from labkit.hessian.experiments.training import copy_generator
from labkit.training import fit

#: ``"erm"`` (no penalty), the paper's ``"hgp"`` and ``"hutchinson"``, and ``"frobenius"`` (whole-Hessian distance).
PENALTIES = ("erm", "hgp", "hutchinson", "frobenius")


def logistic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``(N, 1)`` logits against ``{0, 1}`` labels."""
    return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets.float())


@torch.no_grad()
def binary_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``(N, 1)`` logits on the right side of 0 for ``{0, 1}`` labels."""
    return float(((head(x).squeeze(1) > 0).long() == y).float().mean())


def penalty_terms(penalty: str, head: nn.Module, domains: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                  probes: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """``(mean loss, gradient penalty, Hessian penalty)`` of ``head`` for one of :data:`PENALTIES`
    (``probes``: Hutchinson probes for ``"hutchinson"`` and ``"frobenius"``, None for exact)."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    if penalty == "hgp":
        return tuple(hgp_penalties(head, logistic_loss, domains))
    if penalty == "hutchinson":
        return tuple(hutchinson_penalties(head, logistic_loss, domains, probes=probes, generator=generator))
    if penalty == "frobenius":
        return tuple(alignment_penalties(head, logistic_loss, domains, probes=probes, generator=generator))
    loss = torch.stack([logistic_loss(head(x), y) for x, y in domains]).mean()
    zero = loss.new_zeros(())
    return loss, zero, zero


@dataclass(frozen=True)
class AlignedHead:
    """A logistic head trained by :func:`train_aligned_heads`: its accuracy on the training domains (mean),
    the validation and the test domain, and its weights on the invariant and the spurious feature."""

    head: nn.Linear
    train: float
    validation: float
    test: float
    w_inv: float
    w_spur: float


def train_aligned_heads(
    train_domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    validation: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    methods: Mapping[str, tuple[str, float, float]],
    steps: int,
    lr: float,
    probes: int | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], bool] | None = None,
) -> dict[str, AlignedHead]:
    """Hemati et al., *Understanding Hessian Alignment for Domain Generalization* (ICCV 2023): for each
    ``name -> (penalty, alpha, beta)`` train a zero-initialised logistic head with full-batch GD on
    ``mean loss + alpha * Hessian penalty + beta * gradient penalty`` (the paper's alpha and beta;
    ``penalty`` one of :data:`PENALTIES`; Hutchinson probes drawn from a copy of ``generator``'s state).

    ``progress(done, total)`` (e.g. an explorer's progress bar) is called every 10 steps with the steps done
    over all heads; when it returns True the head in training stops there and the remaining heads are not
    trained (they are left out of the result)."""
    if not train_domains:
        raise ValueError("train_domains must hold at least one (inputs, targets) pair")
    checks.positive_int(steps, "steps")
    checks.number(lr, "lr", low=0, low_open=True)
    for name, (penalty, alpha, beta) in methods.items():
        if penalty not in PENALTIES:
            raise ValueError(f"methods[{name!r}] penalty must be one of {PENALTIES}, got {penalty!r}")
        checks.number(alpha, f"methods[{name!r}] alpha", low=0.0)
        checks.number(beta, f"methods[{name!r}] beta", low=0.0)
    if probes is not None:
        checks.positive_int(probes, "probes")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a callable (done, total) -> bool, got {type(progress).__name__}")
    x0 = train_domains[0][0]
    out = {}
    total, stopped = steps * len(methods), False
    for i, (name, (penalty, alpha, beta)) in enumerate(methods.items()):
        if stopped:
            break
        head = nn.Linear(x0.shape[1], 1).to(x0.device, x0.dtype)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        probe_gen = copy_generator(generator)

        def objective(m: nn.Module, _batch: Any, penalty: str = penalty, alpha: float = alpha, beta: float = beta,
                      probe_gen: torch.Generator | None = probe_gen) -> torch.Tensor:
            loss, grad_pen, hess_pen = penalty_terms(penalty, m, train_domains, probes=probes, generator=probe_gen)
            return loss + alpha * hess_pen + beta * grad_pen

        watch: dict[str, Any] = {}
        if progress is not None:
            def stop_when(h: Any, done_before: int = i * steps) -> bool:
                nonlocal stopped
                stopped = bool(progress(done_before + h.steps[-1], total))
                return stopped

            watch = dict(eval_every=10, stop_when=stop_when)
        fit(head, objective, None, optimizer=torch.optim.SGD(head.parameters(), lr=lr), steps=steps, desc=name,
            **watch)
        train = sum(binary_accuracy(head, x, y) for x, y in train_domains) / len(train_domains)
        out[name] = AlignedHead(head, train, binary_accuracy(head, *validation), binary_accuracy(head, *test),
                                float(head.weight[0, 0].detach()), float(head.weight[0, 1].detach()))
    return out


@dataclass(frozen=True)
class AlignmentTuning:
    """:func:`tune_alignment`'s grid of heads keyed by ``(alpha, beta)``, and the pair with the best
    validation accuracy (ties: the first in grid order, i.e. the weakest penalty)."""

    grid: Mapping[tuple[float, float], AlignedHead]
    best: tuple[float, float]

    @property
    def chosen(self) -> AlignedHead:
        return self.grid[self.best]


def tune_alignment(
    train_domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    validation: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    penalty: str,
    alphas: Sequence[float],
    betas: Sequence[float],
    steps: int,
    lr: float,
    probes: int | None = None,
    generator: torch.Generator | None = None,
) -> AlignmentTuning:
    """Model selection on a held-out validation domain (never the test domain; Gulrajani and Lopez-Paz 2021):
    train one head per ``(alpha, beta)`` with :func:`train_aligned_heads` and keep the best on ``validation``."""
    if not alphas or not betas:
        raise ValueError("alphas and betas must be non-empty")
    pairs = [(float(a), float(b)) for a in sorted(alphas) for b in sorted(betas)]
    heads = train_aligned_heads(train_domains, validation=validation, test=test,
                                methods={f"{penalty} a={a:g} b={b:g}": (penalty, a, b) for a, b in pairs},
                                steps=steps, lr=lr, probes=probes, generator=generator)
    grid = dict(zip(pairs, heads.values(), strict=True))
    best = max(pairs, key=lambda p: grid[p].validation)  # max keeps the first of equal values
    return AlignmentTuning(grid, best)


__all__ = ["PENALTIES", "AlignedHead", "AlignmentTuning", "binary_accuracy", "logistic_loss", "penalty_terms",
           "train_aligned_heads", "tune_alignment"]
