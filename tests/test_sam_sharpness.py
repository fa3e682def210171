"""labkit.sam.sharpness on quadratics with a known Hessian, and restoration of the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.sam import hessian_top_eigenvalue, hessian_trace, worst_case_sharpness


class Quadratic(nn.Module):
    """L(w) = 0.5 (w - c)^T H (w - c), returned for every input row (the loss is the mean)."""

    def __init__(self, h: torch.Tensor, c: torch.Tensor, w: torch.Tensor):
        super().__init__()
        self.register_buffer("h", h)
        self.register_buffer("c", c)
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.w - self.c
        return (0.5 * d @ self.h @ d).expand(len(x))


def mean_out(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def quadratic(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.tensor([9.0, 4.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)[:n]
    h = q @ torch.diag(eig) @ q.T
    c = torch.randn(n, generator=g, dtype=torch.float64) + 2.0
    return h, c, eig


DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))


def test_top_eigenvalue_and_trace_of_a_known_hessian():
    h, c, eig = quadratic()
    model = Quadratic(h, c, c + 0.3)
    assert hessian_top_eigenvalue(model, mean_out, DATA) == pytest.approx(9.0, rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    est = hessian_trace(model, mean_out, DATA, samples=400, generator=gen)
    assert est == pytest.approx(float(eig.sum()), rel=0.1)


@pytest.mark.parametrize("rho", [0.1, 1.0])
def test_worst_case_sharpness_at_a_minimum_is_half_rho_squared_lambda_max(rho):
    h, c, _ = quadratic()
    model = Quadratic(h, c, c)
    value = worst_case_sharpness(model, mean_out, DATA, rho=rho, steps=60,
                                 generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(0.5 * rho**2 * 9.0, rel=1e-3)
    assert torch.equal(model.w.detach(), c)


def test_worst_case_sharpness_away_from_the_minimum_matches_the_ball_maximum():
    # max over ||d|| <= rho of 0.5 (u + d)^T H (u + d) - 0.5 u^T H u, by a fine search on the sphere (2-D)
    h = torch.tensor([[3.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    c = torch.zeros(2, dtype=torch.float64)
    u = torch.tensor([0.4, -0.2], dtype=torch.float64)
    rho = 0.5
    angles = torch.linspace(0, 2 * torch.pi, 200001, dtype=torch.float64)
    d = rho * torch.stack([angles.cos(), angles.sin()], dim=1)
    z = u + d
    exact = (0.5 * ((z @ h) * z).sum(1) - 0.5 * u @ h @ u).max().item()
    model = Quadratic(h, c, u)
    assert worst_case_sharpness(model, mean_out, DATA, rho=rho, steps=100) == pytest.approx(exact, rel=1e-4)


def test_adaptive_worst_case_sharpness_uses_the_weight_scaled_ball():
    h, c, _ = quadratic()
    model = Quadratic(h, c, c)
    rho, eta = 0.2, 0.05
    t = torch.diag(c.abs() + eta)
    lam = torch.linalg.eigvalsh(t @ h @ t).max().item()  # delta = T u, ||u|| <= rho
    value = worst_case_sharpness(model, mean_out, DATA, rho=rho, adaptive=True, eta=eta, steps=200,
                                 generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(0.5 * rho**2 * lam, rel=1e-3)


def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_the_plain_one_is_not():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    scaled = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    with torch.no_grad():
        scaled[0].weight.copy_(net[0].weight * 4.0)
        scaled[2].weight.copy_(net[2].weight / 4.0)  # the same function
    kw = dict(rho=0.05, steps=30)
    a1 = worst_case_sharpness(net, F.cross_entropy, (x, y), adaptive=True, **kw)
    a2 = worst_case_sharpness(scaled, F.cross_entropy, (x, y), adaptive=True, **kw)
    assert a1 == pytest.approx(a2, rel=1e-6)
    s1 = worst_case_sharpness(net, F.cross_entropy, (x, y), **kw)
    s2 = worst_case_sharpness(scaled, F.cross_entropy, (x, y), **kw)
    assert abs(s1 - s2) > 0.1 * max(s1, s2)


def test_model_params_grads_buffers_and_mode_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    net.train()
    marker = torch.full((8,), 7.0)
    net[0].bias.grad = marker.clone()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    value = worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.1, adaptive=True, steps=5, batch_size=8)
    assert value > 0
    hessian_top_eigenvalue(net, F.cross_entropy, (x, y))
    hessian_trace(net, F.cross_entropy, (x, y), samples=3)
    assert net.training
    assert torch.equal(net[0].bias.grad, marker) and net[0].weight.grad is None
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_m_sharpness_averages_batches_and_errors_are_clear():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    parts = [worst_case_sharpness(net, F.cross_entropy, (x[i:i + 4], y[i:i + 4]), rho=0.1, steps=5)
             for i in (0, 4, 8)]
    m_sharp = worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.1, steps=5, batch_size=4)
    assert m_sharp == pytest.approx(sum(parts) / 3, rel=1e-6)
    assert worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.0) == 0.0
    with pytest.raises(ValueError, match="rho"):
        worst_case_sharpness(net, F.cross_entropy, (x, y), rho=-1.0)
    with pytest.raises(ValueError, match="steps"):
        worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.1, steps=0)
    with pytest.raises(TypeError, match="data"):
        worst_case_sharpness(net, F.cross_entropy, x, rho=0.1)
    with pytest.raises(ValueError, match="params is empty"):
        worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.1, params=[])


def test_every_submodule_mode_is_restored_and_foreign_params_are_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    other = nn.Linear(4, 3)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    net.train()
    net[1].eval()  # a mixed state: model.train(was) afterwards would wrongly put the BatchNorm back in train mode
    worst_case_sharpness(net, F.cross_entropy, (x, y), rho=0.1, steps=3)
    hessian_top_eigenvalue(net, F.cross_entropy, (x, y))
    assert net.training and net[0].training and not net[1].training
    for fn, kw in [(worst_case_sharpness, dict(rho=0.1)), (hessian_top_eigenvalue, {}), (hessian_trace, {})]:
        with pytest.raises(ValueError, match="not a parameter of model"):
            fn(net, F.cross_entropy, (x, y), params=list(other.parameters()), **kw)


def test_stationary_point_direction_follows_the_generator_rule():
    # at the exact minimum the ascent starts from a random direction drawn on the (CPU) generator
    h, c, _ = quadratic()
    model = Quadratic(h, c, c)
    a = worst_case_sharpness(model, mean_out, DATA, rho=0.5, steps=1, generator=torch.Generator().manual_seed(3))
    b = worst_case_sharpness(model, mean_out, DATA, rho=0.5, steps=1, generator=torch.Generator().manual_seed(3))
    assert a == b > 0
