"""Loss landscapes: filter normalisation, exact restoration of parameters, curvature = eigenvalue."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.hessian import (
    HessianOperator,
    filter_normalized_direction,
    interpolation_direction,
    loss_surface_1d,
    loss_surface_2d,
    random_direction,
    top_eigenvalues,
)

torch.set_num_threads(1)


def problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def test_filter_normalized_direction_norms_and_ignored_biases():
    model, *_ = problem()
    d = filter_normalized_direction(model, generator=torch.Generator().manual_seed(0))
    parts, i = [], 0
    for p in model.parameters():
        parts.append(d[i : i + p.numel()].view_as(p))
        i += p.numel()
    for p, part in zip(model.parameters(), parts, strict=True):
        if p.dim() == 1:
            assert torch.all(part == 0)
        else:
            torch.testing.assert_close(part.norm(dim=1), p.detach().norm(dim=1))


def test_filter_normalization_is_invariant_to_relu_rescaling():
    """Scaling layer 1 by c and layer 2 by 1/c leaves the function unchanged; the filter-normalised
    1D plot is unchanged too (biases ignored), the raw-direction plot is not."""
    model, x, y = problem(1)
    for p in model[0].parameters():
        p.data.zero_() if p.dim() == 1 else None
    for p in model[2].parameters():
        p.data.zero_() if p.dim() == 1 else None
    scaled, _, _ = problem(1)
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        scaled[0].weight.mul_(5.0)
        scaled[2].weight.div_(5.0)
    torch.testing.assert_close(scaled(x), model(x))
    alphas = torch.linspace(-1, 1, 9)
    curves = {}
    for name, m in (("orig", model), ("scaled", scaled)):
        fn = filter_normalized_direction(m, generator=torch.Generator().manual_seed(3))
        raw = random_direction(m, generator=torch.Generator().manual_seed(3))
        curves[name] = (
            loss_surface_1d(m, F.cross_entropy, (x, y), fn, alphas=alphas).losses,
            loss_surface_1d(m, F.cross_entropy, (x, y), raw, alphas=alphas).losses,
        )
    torch.testing.assert_close(curves["orig"][0], curves["scaled"][0])
    assert (curves["orig"][1] - curves["scaled"][1]).abs().max() > 1e-2


def test_surfaces_restore_parameters_and_grads_and_match_direct_evaluation():
    model, x, y = problem(2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    d1 = random_direction(model, generator=torch.Generator().manual_seed(0))
    d2 = random_direction(model, generator=torch.Generator().manual_seed(1))
    surf = loss_surface_2d(
        model,
        F.cross_entropy,
        [(x[:25], y[:25]), (x[25:], y[25:])],
        d1,
        d2,
        alphas=[-0.5, 0.0, 0.3],
        betas=[0.0, 0.2],
    )
    assert surf.losses.shape == (3, 2)
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b) and torch.equal(p.grad, torch.ones_like(p))
    # direct evaluation at one grid point
    flat = torch.cat([b.reshape(-1) for b in before]) + 0.3 * d1 + 0.2 * d2
    probe, *_ = problem(2)
    torch.nn.utils.vector_to_parameters(flat, probe.parameters())
    assert abs(surf.losses[2, 1].item() - F.cross_entropy(probe(x), y).item()) < 1e-12
    assert abs(surf.losses[1, 0].item() - F.cross_entropy(model(x), y).item()) < 1e-12


def test_parameters_restored_on_error():
    model, x, y = problem(3)
    before = [p.detach().clone() for p in model.parameters()]
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    calls = []

    def bad_loss(out, t):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("boom")
        return F.cross_entropy(out, t)

    with pytest.raises(RuntimeError, match="boom"):
        loss_surface_1d(model, bad_loss, (x, y), d, alphas=[0.1, 0.2, 0.3])
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_curvature_along_top_eigenvector_is_top_eigenvalue():
    model, x, y = problem(4)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    top = top_eigenvalues(op, k=1, generator=torch.Generator().manual_seed(0))
    v = top.eigenvectors[:, 0]
    h = 1e-3
    surf = loss_surface_1d(model, F.cross_entropy, (x, y), v, alphas=[-h, 0.0, h])
    curvature = (surf.losses[0] - 2 * surf.losses[1] + surf.losses[2]) / h**2
    assert abs(curvature.item() - top.eigenvalues[0].item()) < 1e-4 * top.eigenvalues[0].item()


def test_interpolation_direction_reaches_the_other_model():
    model_a, x, y = problem(5)
    model_b, *_ = problem(6)
    d = interpolation_direction(model_a, model_b)
    surf = loss_surface_1d(model_a, F.cross_entropy, (x, y), d, alphas=[0.0, 1.0])
    assert abs(surf.losses[1].item() - F.cross_entropy(model_b(x), y).item()) < 1e-12
    assert abs(surf.losses[0].item() - F.cross_entropy(model_a(x), y).item()) < 1e-12


def test_landscape_errors():
    model, x, y = problem()
    with pytest.raises(ValueError, match="flat vector"):
        loss_surface_1d(model, F.cross_entropy, (x, y), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="alphas"):
        loss_surface_1d(model, F.cross_entropy, (x, y), random_direction(model), alphas=[])


def test_surface_in_train_mode_leaves_batchnorm_buffers_grads_and_modes_as_found():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    model[1].eval()  # a mixed mode: the guard restores each submodule's own flag
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = [t.clone() for t in [*model.parameters(), *model.buffers()]]
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    surface = loss_surface_1d(model, F.cross_entropy, (x, y), d, alphas=[-0.1, 0.0, 0.1], train_mode=True)
    assert surface.losses.shape == (3,) and torch.isfinite(surface.losses).all()
    after = [*model.parameters(), *model.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in model.parameters())
    assert model.training and not model[1].training
    with pytest.raises(AttributeError):
        surface.losses = None
