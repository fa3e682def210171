"""HGP and Hutchinson penalties of Hemati et al. (ICCV 2023) against exact Hessians from
torch.autograd.functional.hessian (the oracle), and the model-selection experiment."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian

from labkit.hessian import hessian_gradient_product, hgp_penalties, hutchinson_penalties, spurious_domain
from labkit.hessian.experiments import PENALTIES, penalty_terms, train_aligned_heads, tune_alignment


def bce(out, t):
    return F.binary_cross_entropy_with_logits(out.squeeze(1), t.double())


def _problem():
    g = torch.Generator().manual_seed(0)
    domains = [tuple(t.double() if t.is_floating_point() else t for t in spurious_domain(80, rho, generator=g))
               for rho in (0.9, 0.6, 0.3)]
    head = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.7, -0.4]]))
        head.bias.fill_(0.2)
    return head, domains


def _oracle(head, domains):
    """Per-domain flat gradient and Hessian of the loss in theta = (w1, w2, b) by torch.autograd.functional."""
    out = []
    for x, y in domains:
        def loss(theta, x=x, y=y):
            return bce((x @ theta[:2] + theta[2]).unsqueeze(1), y)
        theta = torch.cat([head.weight.detach()[0], head.bias.detach()])
        out.append((torch.autograd.grad(loss(theta.requires_grad_()), theta)[0], hessian(loss, theta.detach())))
    return out


def test_hessian_gradient_product_is_h_times_g():
    head, domains = _problem()
    params = list(head.parameters())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(bce(head(domains[0][0]), domains[0][1]), params,
                                                               create_graph=True)])
    (g_ref, h_ref), *_ = _oracle(head, domains)
    assert torch.allclose(g.detach(), g_ref, atol=1e-12)
    assert torch.allclose(hessian_gradient_product(g, params).detach(), h_ref @ g_ref, rtol=1e-10, atol=1e-14)


def test_hgp_penalties_match_the_oracle():
    head, domains = _problem()
    ref = _oracle(head, domains)
    g_bar = sum(g for g, _ in ref) / len(ref)
    h_bar = sum(h for _, h in ref) / len(ref)
    hgp = sum(float(((h @ g - h_bar @ g_bar) ** 2).sum()) for g, h in ref) / len(ref)
    grad = sum(float(((g - g_bar) ** 2).sum()) for g, _ in ref) / len(ref)
    loss, gp, hp = hgp_penalties(head, bce, domains)
    assert float(hp.detach()) == pytest.approx(hgp, rel=1e-9)
    assert float(gp.detach()) == pytest.approx(grad, rel=1e-9)
    assert float(loss.detach()) == pytest.approx(sum(float(bce(head(x), y)) for x, y in domains) / 3, rel=1e-12)
    (loss + gp + hp).backward()  # differentiable: a training objective
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()


def test_hgp_is_zero_for_identical_domains():
    head, domains = _problem()
    _, gp, hp = hgp_penalties(head, bce, [domains[0], domains[0]])
    assert float(gp) == 0.0 and float(hp) == 0.0


def test_hutchinson_penalties_exact_and_estimated():
    head, domains = _problem()
    ref = _oracle(head, domains)
    d_bar = sum(h.diagonal() for _, h in ref) / len(ref)
    exact = sum(float(((h.diagonal() - d_bar) ** 2).sum()) for _, h in ref) / len(ref)
    _, _, hp = hutchinson_penalties(head, bce, domains, probes=None)
    assert float(hp) == pytest.approx(exact, rel=1e-9)
    # the diagonal estimate is unbiased: many probes get close to the exact penalty
    _, _, est = hutchinson_penalties(head, bce, domains, probes=4000, generator=torch.Generator().manual_seed(1))
    assert float(est) == pytest.approx(exact, rel=0.1)
    # the same generator state gives the same estimate; the probes are Rademacher vectors shared by the domains
    a = hutchinson_penalties(head, bce, domains, probes=3, generator=torch.Generator().manual_seed(5)).hessian_penalty
    b = hutchinson_penalties(head, bce, domains, probes=3, generator=torch.Generator().manual_seed(5)).hessian_penalty
    assert float(a) == float(b)


def test_penalties_refuse_bad_input():
    head, domains = _problem()
    with pytest.raises(ValueError, match="two"):
        hgp_penalties(head, bce, domains[:1])
    with pytest.raises(ValueError, match="probes"):
        hutchinson_penalties(head, bce, domains, probes=0)
    with pytest.raises(TypeError, match="domains"):
        hgp_penalties(head, bce, domains[0][0])
    with pytest.raises(ValueError, match="penalty"):
        penalty_terms("sam", head, domains)
    assert PENALTIES == ("erm", "hgp", "hutchinson", "frobenius")


def test_tuning_picks_the_best_validation_accuracy_and_never_reads_test():
    g = torch.Generator().manual_seed(0)
    train = [tuple(spurious_domain(100, rho, generator=g)) for rho in (0.9, 0.8)]
    val, test = tuple(spurious_domain(100, 0.5, generator=g)), tuple(spurious_domain(100, 0.1, generator=g))
    tuned = tune_alignment(train, validation=val, test=test, penalty="hgp", alphas=[0.0, 10.0], betas=[0.0, 1.0],
                           steps=5, lr=0.5)
    assert set(tuned.grid) == {(0.0, 0.0), (0.0, 1.0), (10.0, 0.0), (10.0, 1.0)}
    best = max(h.validation for h in tuned.grid.values())
    assert tuned.chosen.validation == best
    assert tuned.best == next(p for p, h in tuned.grid.items() if h.validation == best)  # first of equals
    # swapping the test domain for another leaves the choice unchanged
    again = tune_alignment(train, validation=val, test=train[0], penalty="hgp", alphas=[0.0, 10.0], betas=[0.0, 1.0],
                           steps=5, lr=0.5)
    assert again.best == tuned.best
    heads = train_aligned_heads(train, validation=val, test=test, methods={"ERM": ("erm", 0.0, 0.0),
                                "H": ("hutchinson", 1.0, 1.0)}, steps=3, lr=0.5, probes=2,
                                generator=torch.Generator().manual_seed(1))
    r = heads["ERM"]
    assert 0 <= r.test <= 1 and 0 <= r.validation <= 1 and r.w_inv == float(r.head.weight[0, 0].detach())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.test = 1.0
    with pytest.raises(ValueError, match="penalty"):
        train_aligned_heads(train, validation=val, test=test, methods={"x": ("fish", 1.0, 1.0)}, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="train_domains"):
        train_aligned_heads([], validation=val, test=test, methods={}, steps=1, lr=0.1)
