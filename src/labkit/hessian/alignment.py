"""Gradient and Hessian alignment across training domains (Hemati, Zhang, Estiri and Chen, *Understanding
Hessian Alignment for Domain Generalization*, ICCV 2023, arXiv:2308.11778), with a spurious-feature toy.

The paper's two methods (Sec. "Efficient Hessian alignment"; the authors' code at
github.com/huawei-noah/Federated-Learning, ``HessianAlignment``) add to the mean loss over the training
domains ``alpha * Hessian term + beta * gradient term``, with the gradient term
``sum_e ||g_e - g_bar||^2 / E`` (``g_bar`` the gradient of the mean loss) and the Hessian term

- ``hgp_penalties`` (HGP): ``sum_e ||H_e g_e - H_bar g_bar||^2 / E``, the Hessian-gradient products, each
  computed without a Hessian as ``H g = grad(0.5 ||g||^2)`` (one double backward per domain);
- ``hutchinson_penalties`` (Hutchinson): ``sum_e ||D_e - D_bar||^2 / E`` with ``D_e`` the Hutchinson estimate
  ``mean_v v * (H_e v)`` of the Hessian diagonal (Rademacher ``v``, shared by the domains), or the exact
  diagonal with ``probes=None``.

``alignment_penalties`` is the plain Frobenius distance ``sum_e ||H_e - H_bar||_F^2 / E`` of whole Hessians
(exact, or Hutchinson's ``E_v ||(H_e - H_bar) v||^2``): the quantity the paper's bound is about, affordable
only for tiny heads.
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
    """The mean loss over the domains, the gradient-alignment penalty and a Hessian-alignment penalty
    (Hemati et al. 2023), all differentiable; unpacks as ``loss, gradient_penalty, hessian_penalty``."""

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
    if probes is not None:
        checks.positive_int(probes, "probes")
        check_generator(generator)
    chosen, losses, grads = _domain_gradients(model, loss_fn, domains, params)
    numel = sum(p.numel() for p in chosen)
    vs = None
    if probes is not None:
        vs = rademacher((probes, numel), generator=generator, device=chosen[0].device, dtype=chosen[0].dtype)
    hess_terms = []
    for g in grads:
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


def _domain_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    params: Sequence[nn.Parameter] | None,
) -> tuple[list[nn.Parameter], list[torch.Tensor], list[torch.Tensor]]:
    """Checked domains -> (chosen parameters, per-domain losses, per-domain flat gradients with graph)."""
    if isinstance(domains, torch.Tensor) or not isinstance(domains, Sequence):
        raise TypeError(f"domains must be a sequence of (inputs, targets) pairs, got {type(domains).__name__}")
    if len(domains) < 2:
        raise ValueError(f"domains must hold at least two (inputs, targets) pairs, got {len(domains)}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    chosen = resolve_params(model, params)
    losses, grads = [], []
    for i, domain in enumerate(domains):
        name = f"domains[{i}]"
        x, y = as_pair(domain, name)
        checks.tensor(x, f"{name} inputs")
        checks.tensor(y, f"{name} targets")
        checks.same_dtype_as_model(x, model, f"{name} inputs")
        try:
            outputs = model(x)
        except RuntimeError as exc:
            if not any(word in str(exc).lower() for word in _inputs._SHAPE_WORDS):
                raise
            raise ValueError(f"{name} inputs of shape {tuple(x.shape)} do not fit the model: "
                             f"{str(exc).splitlines()[0]}") from exc
        loss = checked_loss(loss_fn, outputs, y, name)
        losses.append(loss)
        grads.append(flatten(torch.autograd.grad(loss, chosen, create_graph=True)))
    return chosen, losses, grads


def _spread(vectors: list[torch.Tensor], centre: torch.Tensor) -> torch.Tensor:
    """``sum_e ||v_e - centre||^2 / E``."""
    return torch.stack([((v - centre) ** 2).sum() for v in vectors]).mean()


def hessian_gradient_product(gradient: torch.Tensor, params: Sequence[nn.Parameter]) -> torch.Tensor:
    """``H g`` from a flat gradient ``g`` built with ``create_graph=True``: ``grad(0.5 ||g||^2)`` (Hemati et al.
    2023, HGP), itself differentiable."""
    return flatten(torch.autograd.grad(0.5 * gradient.pow(2).sum(), list(params), create_graph=True))


def hgp_penalties(
    model: nn.Module,
    loss_fn: LossFn,
    domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    params: Sequence[nn.Parameter] | None = None,
) -> AlignmentPenalties:
    """HGP (Hemati et al., ICCV 2023, arXiv:2308.11778): ``(mean loss, sum_e ||g_e - g_bar||^2 / E,
    sum_e ||H_e g_e - H_bar g_bar||^2 / E)`` as :class:`AlignmentPenalties`, all differentiable in ``params``.

    ``g_bar`` and ``H_bar`` belong to the mean loss over the domains; every ``H g`` is
    :func:`hessian_gradient_product` (no Hessian is formed). The train objective is
    ``loss + alpha * hessian_penalty + beta * gradient_penalty`` (the paper's alpha and beta). The caller's
    ``param.grad`` is not touched.
    """
    chosen, losses, grads = _domain_gradients(model, loss_fn, domains, params)
    g_bar = torch.stack(grads).mean(0)
    products = [hessian_gradient_product(g, chosen) for g in grads]
    return AlignmentPenalties(torch.stack(losses).mean(), _spread(grads, g_bar),
                              _spread(products, hessian_gradient_product(g_bar, chosen)))


def hutchinson_penalties(
    model: nn.Module,
    loss_fn: LossFn,
    domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    probes: int | None,
    params: Sequence[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> AlignmentPenalties:
    """Hutchinson (Hemati et al., ICCV 2023, arXiv:2308.11778): ``(mean loss, sum_e ||g_e - g_bar||^2 / E,
    sum_e ||D_e - D_bar||^2 / E)`` as :class:`AlignmentPenalties`, differentiable in ``params``.

    ``D_e`` is the Hutchinson estimate ``mean_v v * (H_e v)`` of the diagonal of domain ``e``'s Hessian with
    ``probes`` Rademacher vectors drawn from ``generator`` and shared by the domains (so ``D_bar``, the estimate
    for the mean loss, is the mean of the ``D_e``); ``probes=None`` takes the exact diagonals (``P`` double
    backward passes per domain, for small heads). The caller's ``param.grad`` is not touched.
    """
    chosen, losses, grads = _domain_gradients(model, loss_fn, domains, params)
    numel = sum(p.numel() for p in chosen)
    if probes is None:
        diagonals = [torch.stack([flatten(torch.autograd.grad(g[i], chosen, create_graph=True))[i]
                                  for i in range(numel)]) for g in grads]
    else:
        checks.positive_int(probes, "probes")
        check_generator(generator)
        vs = rademacher((probes, numel), generator=generator, device=chosen[0].device, dtype=chosen[0].dtype)
        diagonals = [torch.stack([v * flatten(torch.autograd.grad(g @ v, chosen, create_graph=True)) for v in vs])
                     .mean(0) for g in grads]
    g_bar = torch.stack(grads).mean(0)
    return AlignmentPenalties(torch.stack(losses).mean(), _spread(grads, g_bar),
                              _spread(diagonals, torch.stack(diagonals).mean(0)))
