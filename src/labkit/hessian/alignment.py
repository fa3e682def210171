"""Gradient and Hessian alignment across training domains (Hemati, Zhang, Estiri and Chen, *Understanding
Hessian Alignment for Domain Generalization*, ICCV 2023, arXiv:2308.11778), with a spurious-feature toy.

``alignment_penalties`` returns the mean loss over domains and two differentiable penalties:
``sum_e ||g_e - mean g||^2 / E`` and ``sum_e ||H_e - mean H||_F^2 / E`` (exact, for small heads) or its
Hutchinson estimate ``E_v ||(H_e - mean H) v||^2`` from Hessian-vector products with Rademacher ``v``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from labkit import checks
from labkit.autograd import as_pair, check_generator, flatten, rademacher, rand, randint, randn, resolve_params
from labkit.hessian import _inputs
from labkit.hessian.operator import LossFn, checked_loss


class Domain(NamedTuple):
    """One domain of the spurious-feature toy: ``inputs`` (n, 2) = ``(x_inv, x_spur)``, ``targets`` (n,) in {0, 1}."""

    inputs: torch.Tensor
    targets: torch.Tensor


class AlignmentPenalties(NamedTuple):
    """The mean loss over the domains and the two penalties of Hemati et al. (2023), all differentiable;
    unpacks as ``loss, gradient_penalty, hessian_penalty``."""

    loss: torch.Tensor
    gradient_penalty: torch.Tensor
    hessian_penalty: torch.Tensor


def spurious_domain(
    n: int,
    rho: float,
    *,
    signal: float = 1.0,
    noise: float = 1.0,
    spurious_noise: float = 0.1,
    generator: torch.Generator | None = None,
) -> Domain:
    """A domain of the spurious-feature toy: labels ``y`` in {0, 1}, features ``(x_inv, x_spur)``.

    ``x_inv = signal * s + noise * N(0, 1)`` (``s = 2y - 1``, the same in every domain) and
    ``x_spur = a * s + spurious_noise * N(0, 1)`` with ``a = +1`` with probability ``rho`` (else -1): the
    spurious feature is almost noise-free but its agreement with the label ``rho`` changes across domains.
    """
    checks.positive_int(n, "n")
    checks.number(rho, "rho", low=0.0, high=1.0)
    checks.number(signal, "signal")
    checks.number(noise, "noise", low=0.0)
    checks.number(spurious_noise, "spurious_noise", low=0.0)
    check_generator(generator)
    y = randint(0, 2, (n,), generator=generator)
    s = 2 * y.float() - 1
    inv = signal * s + noise * randn((n,), generator=generator)
    agree = (rand((n,), generator=generator) < rho).float() * 2 - 1
    spur = agree * s + spurious_noise * randn((n,), generator=generator)
    return Domain(torch.stack([inv, spur], dim=1), y)


def alignment_penalties(
    model: nn.Module,
    loss_fn: LossFn,
    domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    params: Sequence[nn.Parameter] | None = None,
    probes: int | None = None,
    generator: torch.Generator | None = None,
) -> AlignmentPenalties:
    """``(mean loss, gradient penalty, Hessian penalty)`` over ``domains`` as :class:`AlignmentPenalties`,
    all differentiable in ``params``.

    ``probes=None``: exact Hessians (``P`` double-backward rows per domain; for classifier heads).
    ``probes=m``: Hutchinson estimate with ``m`` Rademacher vectors shared by all domains (unbiased for the
    squared Frobenius norm). The caller's ``param.grad`` is not touched. This is a training objective, not a
    measurement: the model runs as the caller left it (a train-mode BatchNorm updates its statistics, as in
    any training forward pass).
    """
    if isinstance(domains, torch.Tensor) or not isinstance(domains, Sequence):
        raise TypeError(f"domains must be a sequence of (inputs, targets) pairs, got {type(domains).__name__}")
    if len(domains) < 2:
        raise ValueError(f"domains must hold at least two (inputs, targets) pairs, got {len(domains)}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    chosen = resolve_params(model, params)
    checked = []
    for i, domain in enumerate(domains):
        x, y = as_pair(domain, f"domains[{i}]")
        checks.tensor(x, f"domains[{i}] inputs")
        checks.tensor(y, f"domains[{i}] targets")
        checks.same_dtype_as_model(x, model, f"domains[{i}] inputs")
        checked.append((x, y))
    numel = sum(p.numel() for p in chosen)
    losses, grads, hess_terms = [], [], []
    vs = None
    if probes is not None:
        checks.positive_int(probes, "probes")
        check_generator(generator)
        vs = rademacher((probes, numel), generator=generator, device=chosen[0].device, dtype=chosen[0].dtype)
    for i, (x, y) in enumerate(checked):
        name = f"domains[{i}]"
        try:
            outputs = model(x)
        except RuntimeError as exc:
            if not any(word in str(exc).lower() for word in _inputs._SHAPE_WORDS):
                raise
            raise ValueError(f"{name} inputs of shape {tuple(x.shape)} do not fit the model: "
                             f"{str(exc).splitlines()[0]}") from exc
        loss = checked_loss(loss_fn, outputs, y, name)
        g = flatten(torch.autograd.grad(loss, chosen, create_graph=True))
        losses.append(loss)
        grads.append(g)
        if vs is None:
            rows = [flatten(torch.autograd.grad(g[i], chosen, create_graph=True)) for i in range(numel)]
            hess_terms.append(torch.stack(rows))
        else:
            hvps = [flatten(torch.autograd.grad(g @ v, chosen, create_graph=True)) for v in vs]
            hess_terms.append(torch.stack(hvps))  # (probes, P): H_e v
    g_all = torch.stack(grads)
    h_all = torch.stack(hess_terms)
    grad_pen = ((g_all - g_all.mean(0)) ** 2).sum(dim=1).mean()
    dev = ((h_all - h_all.mean(0)) ** 2).sum(dim=(1, 2))
    hess_pen = dev.mean() if vs is None else dev.mean() / len(vs)
    return AlignmentPenalties(torch.stack(losses).mean(), grad_pen, hess_pen)
