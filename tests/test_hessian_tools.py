"""Spectrum helpers and the scalar-network closed forms."""

import math

import numpy as np
import pytest
import torch

from labkit.hessian import (
    HessianOperator,
    ScalarNetwork,
    exact_hessian,
    gfs_sharpness,
    gradient_flow_solution,
    outlier_count,
    subspace_fraction,
    top_eigenvalues,
)


def test_outlier_count_finds_the_largest_ratio_gap():
    spectrum = torch.tensor([5.0, 4.0, 3.5, 0.3, 0.2, 0.1, -0.05])
    assert outlier_count(spectrum) == 3
    assert outlier_count(spectrum.flip(0)) == 3  # order does not matter
    with pytest.raises(ValueError, match="two positive"):
        outlier_count(torch.tensor([1.0, -1.0]))


def test_subspace_fraction_closed_form():
    basis = torch.eye(5)[:, :2]
    v = torch.tensor([3.0, 4.0, 0.0, 0.0, 5.0])
    assert math.isclose(subspace_fraction(v, basis), 25 / 50)
    with pytest.raises(ValueError, match="non-zero"):
        subspace_fraction(torch.zeros(5), basis)
    with pytest.raises(ValueError, match="basis"):
        subspace_fraction(v, torch.eye(4))


def loss_fn(out, t):
    return 0.5 * ((out - t) ** 2).mean()


def test_gradient_flow_solution_matches_numerical_gradient_flow():
    w0 = torch.tensor([0.4, 1.4, 1.8, 1.0], dtype=torch.float64)
    w_star = gradient_flow_solution(w0)
    assert abs(float(torch.prod(w_star)) - 1.0) < 1e-10
    torch.testing.assert_close(w_star**2 - w_star[0] ** 2, w0**2 - w0[0] ** 2)
    w = w0.numpy().copy()
    for _ in range(20000):
        p = np.prod(w)
        w = w - 1e-3 * (p - 1.0) * p / w
    assert np.allclose(w, w_star.numpy(), atol=1e-3)


def test_gfs_sharpness_is_the_hessian_eigenvalue_at_the_solution():
    w0 = torch.tensor([0.5, -1.5, -2.0], dtype=torch.float64)  # two negative weights: product positive
    w_star = gradient_flow_solution(w0, x=2.0, y=3.0)
    net = ScalarNetwork(w_star)
    x, y = torch.full((1,), 2.0, dtype=torch.float64), torch.full((1,), 3.0, dtype=torch.float64)
    hess = exact_hessian(net, loss_fn, (x, y))
    expected = gfs_sharpness(w0, x=2.0, y=3.0)
    assert abs(float(torch.linalg.eigvalsh(hess)[-1]) - expected) < 1e-9 * expected
    top = top_eigenvalues(HessianOperator(net, loss_fn, (x, y)), k=1)
    assert abs(float(top.eigenvalues[0]) - expected) < 1e-9 * expected


def test_gradient_flow_solution_errors():
    with pytest.raises(ValueError, match="signs"):
        gradient_flow_solution(torch.tensor([-1.0, 2.0]))
    with pytest.raises(ValueError, match="non-zero"):
        gradient_flow_solution(torch.tensor([0.0, 2.0]))


def test_softmax_regression_hessian_closed_form_matches_exact_hessian():
    from labkit.hessian import softmax_regression_hessian, softmax_regression_hessian_diagonal

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    layer = torch.nn.Linear(4, 3, bias=False).double()
    ref = exact_hessian(layer, torch.nn.functional.cross_entropy, (x, y))
    w = layer.weight.detach()
    torch.testing.assert_close(softmax_regression_hessian(x, w), ref)
    torch.testing.assert_close(softmax_regression_hessian_diagonal(x, w, l2=0.5), torch.diagonal(ref) + 0.5)
    rows = torch.arange(10)
    sub = exact_hessian(layer, torch.nn.functional.cross_entropy, (x[:10], y[:10]))
    torch.testing.assert_close(softmax_regression_hessian(x, w, rows=rows), sub)


def test_regularized_newton_solves_a_strongly_convex_problem():
    from labkit.hessian import regularized_newton

    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    q = a @ a.T + torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)

    def loss_grad(w):  # log-sum-exp plus a quadratic: smooth, strongly convex
        lse = torch.logsumexp(w, dim=0)
        loss = 0.5 * w @ q @ w - b @ w + lse
        return float(loss), q @ w - b + torch.softmax(w, dim=0)

    def hessian(w, k):
        p = torch.softmax(w, dim=0)
        return q + torch.diag(p) - torch.outer(p, p)

    run = regularized_newton(loss_grad, hessian, torch.full((8,), 5.0, dtype=torch.float64), steps=50, tol=1e-12)
    assert run.grad_norms[-1] <= 1e-12
    assert all(b2 <= a2 + 1e-12 for a2, b2 in zip(run.losses, run.losses[1:], strict=False))  # monotone
    with pytest.raises(ValueError, match="steps"):
        regularized_newton(loss_grad, hessian, torch.zeros(8, dtype=torch.float64), steps=0)


def test_alignment_penalties_exact_and_hutchinson():
    from labkit.hessian import alignment_penalties, spurious_domain

    g = torch.Generator().manual_seed(0)
    domains = [spurious_domain(200, 0.9, generator=g), spurious_domain(200, 0.6, generator=g)]
    head = torch.nn.Linear(2, 1).double()
    domains = [(x.double(), y.double()) for x, y in domains]

    def bce(out, t):
        return torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t)

    loss, gp, hp = alignment_penalties(head, bce, domains)
    hs = [exact_hessian(head, bce, d) for d in domains]
    mean_h = (hs[0] + hs[1]) / 2
    expected = sum(float(((h - mean_h) ** 2).sum()) for h in hs) / 2
    assert abs(float(hp.detach()) - expected) < 1e-10 * max(expected, 1.0)
    # Hutchinson is unbiased: many probes get close
    _, _, hp_hutch = alignment_penalties(head, bce, domains, probes=4000, generator=torch.Generator().manual_seed(1))
    assert abs(float(hp_hutch.detach()) - expected) < 0.1 * expected
    (loss + gp + hp).backward()  # differentiable
    assert head.weight.grad is not None
    with pytest.raises(ValueError, match="two"):
        alignment_penalties(head, bce, domains[:1])


def test_alignment_results_are_named_tuples():
    from labkit.hessian import AlignmentPenalties, Domain, alignment_penalties, spurious_domain

    dom = spurious_domain(50, 0.8, generator=torch.Generator().manual_seed(3))
    again = spurious_domain(50, 0.8, generator=torch.Generator().manual_seed(3))
    assert isinstance(dom, Domain) and torch.equal(dom.inputs, again.inputs) and torch.equal(dom.targets, again[1])
    head = torch.nn.Linear(2, 1)

    def bce(out, t):
        return torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t.float())

    res = alignment_penalties(head, bce, [dom, spurious_domain(50, 0.3, generator=torch.Generator().manual_seed(4))])
    assert isinstance(res, AlignmentPenalties)
    loss, gp, hp = res
    assert loss is res.loss and gp is res.gradient_penalty and hp is res.hessian_penalty
    with pytest.raises(TypeError, match="generator"):
        spurious_domain(5, 0.5, generator=3)
