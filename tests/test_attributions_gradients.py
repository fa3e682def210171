"""Input-gradient attributions against Captum, closed forms and the completeness axiom."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.attributions import (
    ig_points,
    input_x_gradient,
    integrated_gradients,
    integrated_gradients_with_delta,
    noise_scale,
    saliency,
    smoothgrad,
)
from labkit.attributions._common import chunks
from labkit.models import cnn

captum_attr = pytest.importorskip("captum.attr")


def small_cnn(seed: int = 0, activation: str = "softplus") -> nn.Module:
    torch.manual_seed(seed)
    return cnn(1, 5, channels=(4, 6), image_size=8, activation=activation).double()


def batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Quadratic(nn.Module):
    """f(x) = sum_i c_i x_i^2 as a single logit: gradient 2 c (x + eps) is linear in the noise."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = nn.Parameter(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.c * x.reshape(x.shape[0], -1).square()).sum(1, keepdim=True)


def test_saliency_and_input_x_gradient_match_captum():
    model, x, t = small_cnn(), batch(), torch.tensor([0, 1, 2, 4])
    ref = captum_attr.Saliency(model).attribute(x, target=t, abs=False)
    torch.testing.assert_close(saliency(model, x, t), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(saliency(model, x, t, abs=True), ref.abs(), atol=1e-5, rtol=0)
    ref = captum_attr.InputXGradient(model).attribute(x, target=t)
    torch.testing.assert_close(input_x_gradient(model, x, t), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "rule,method",
    [
        ("gausslegendre", "gausslegendre"),
        ("riemann_left", "riemann_left"),
        ("riemann_right", "riemann_right"),
        ("riemann_middle", "riemann_middle"),
    ],
)
def test_integrated_gradients_match_captum(rule, method):
    model, x = small_cnn(), batch()
    base = torch.full_like(x, 0.2)
    ours, delta = integrated_gradients_with_delta(model, x, 3, baseline=base, steps=20, rule=rule)
    ref, ref_delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=base, target=3, n_steps=20, method=method, return_convergence_delta=True
    )
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(delta, ref_delta, atol=1e-5, rtol=0)


def test_captum_trapezoid_weights_do_not_sum_to_one():
    """Captum 0.9's riemann_trapezoid puts n points 1/(n-1) apart but weights them 1/n (ends halved), so
    its IG is (n-1)/n of the trapezoid rule: completeness fails even on a linear model. Ours is exact."""
    model, x, n = small_cnn(), batch(), 20
    ours = integrated_gradients(model, x, 3, steps=n, rule="riemann_trapezoid")
    ref = captum_attr.IntegratedGradients(model).attribute(x, target=3, n_steps=n, method="riemann_trapezoid")
    torch.testing.assert_close(ours * (n - 1) / n, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
)
def test_integrated_gradients_linear_closed_form(rule):
    torch.manual_seed(0)
    lin = nn.Linear(10, 3).double()
    x, b = torch.randn(6, 10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    ig = integrated_gradients(lin, x, t, baseline=b, steps=7, rule=rule)
    torch.testing.assert_close(ig, (x - b) * lin.weight[t].detach(), atol=1e-12, rtol=0)


def test_ig_points_integrate_polynomials():
    a, w = ig_points(5, "gausslegendre")
    assert torch.isclose((w * a**9).sum(), torch.tensor(0.1, dtype=torch.float64))  # exact to degree 9
    a, w = ig_points(4, "riemann_trapezoid")
    torch.testing.assert_close(a, torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64))
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_completeness_on_cnn():
    model, x = small_cnn(), batch(8)
    ig, delta = integrated_gradients_with_delta(model, x, 2, steps=64)
    with torch.no_grad():
        gap = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    torch.testing.assert_close(ig.reshape(8, -1).sum(1) - gap, delta, atol=1e-12, rtol=0)
    assert (delta.abs() <= 0.01 * gap.abs()).all()


def test_return_delta_flag_is_deprecated_but_unpacks_as_before():
    model, x = small_cnn(), batch(3)
    result = integrated_gradients_with_delta(model, x, 1, steps=16)
    assert result.attributions.shape == x.shape and result.delta.shape == (3,)
    with pytest.warns(DeprecationWarning, match="integrated_gradients_with_delta"):
        attr, delta = integrated_gradients(model, x, 1, steps=16, return_delta=True)
    torch.testing.assert_close(attr, result.attributions, atol=0, rtol=0)
    torch.testing.assert_close(delta, result.delta, atol=0, rtol=0)
    torch.testing.assert_close(integrated_gradients(model, x, 1, steps=16), attr, atol=0, rtol=0)
    alphas, weights = ig_points(4, "riemann_left")
    points = ig_points(4, "riemann_left")
    assert torch.equal(points.alphas, alphas) and torch.equal(points.weights, weights)


def test_generator_may_live_on_the_cpu_or_the_input_device():
    model, x = small_cnn(), batch(2)
    a = smoothgrad(model, x, 0, samples=3, generator=torch.Generator().manual_seed(0))
    b = smoothgrad(model, x, 0, samples=3, generator=torch.Generator(device="cpu").manual_seed(0))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    if torch.cuda.is_available():
        on_gpu = smoothgrad(model.cuda(), x.cuda(), 0, samples=3, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(on_gpu.cpu(), a, atol=1e-10, rtol=0)  # CPU draws, moved: the same noise


def test_chunk_size_does_not_change_results():
    model, x = small_cnn(), batch(5)
    ref = integrated_gradients(model, x, 1, steps=9, chunk_size=10_000)
    for c in (1, 3, 7, "auto"):
        torch.testing.assert_close(
            integrated_gradients(model, x, 1, steps=9, chunk_size=c), ref, atol=1e-12, rtol=0
        )
    ref = smoothgrad(
        model, x, 1, samples=6, kind="var", generator=torch.Generator().manual_seed(3), chunk_size=10_000
    )
    for c in (1, 3, 11, "auto"):
        out = smoothgrad(
            model, x, 1, samples=6, kind="var", generator=torch.Generator().manual_seed(3), chunk_size=c
        )
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "n_points,n_examples,rows", [(50, 64, 832), (50, 64, 64), (9, 5, 10_000), (7, 5, 3), (3, 64, 40)]
)
def test_chunks_cover_every_point_and_example_once_in_order(n_points, n_examples, rows):
    blocks = list(chunks(n_points, n_examples, rows))
    seen = [(p, e) for p0, p1, e0, e1 in blocks for p in range(p0, p1) for e in range(e0, e1)]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == n_points * n_examples
    assert all((p1 - p0) * (e1 - e0) <= rows for p0, p1, e0, e1 in blocks)
    if rows >= n_examples:  # as few blocks as the row budget allows, of near-equal length
        assert len(blocks) == -(-n_points // (rows // n_examples))
    else:
        assert len(blocks) == n_points * -(-n_examples // rows)
    assert [p1 - p0 for p0, p1, *_ in chunks(50, 64, 2048)] == [25, 25]  # not 32 + 18


class ViewFlatten(nn.Module):
    """A hand-written CNN that flattens with ``.view``, which fails on channels-last activations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.softplus(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_channels_last_fast_path_matches_nchw_and_falls_back():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    seen = []

    class Record(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            seen.append(z.is_contiguous())
            return self.inner(z)

    model = cnn(3, 5, channels=(4, 6), image_size=8, activation="softplus").double()
    nchw = lambda z: model(z.contiguous())  # noqa: E731 - the same model, fed NCHW batches
    fast = integrated_gradients(Record(model), x, 1, steps=9, chunk_size=12)
    assert seen and not any(seen)  # every chunk went channels-last
    torch.testing.assert_close(fast, integrated_gradients(nchw, x, 1, steps=9, chunk_size=12), atol=1e-12, rtol=0)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    torch.testing.assert_close(
        smoothgrad(model, x, 1, samples=5, kind="square", generator=gen()),
        smoothgrad(nchw, x, 1, samples=5, kind="square", generator=gen()),
        atol=1e-12,
        rtol=0,
    )
    view_model = ViewFlatten().double()
    with pytest.raises(RuntimeError, match="view"):
        view_model(x.contiguous(memory_format=torch.channels_last))
    reshape_model = lambda z: view_model.fc(  # noqa: E731
        torch.nn.functional.softplus(view_model.conv(z)).reshape(z.shape[0], -1)
    )
    for c in (6, 12, "auto"):
        torch.testing.assert_close(
            integrated_gradients(view_model, x, 2, steps=5, chunk_size=c),
            integrated_gradients(reshape_model, x, 2, steps=5, chunk_size=c),
            atol=1e-12,
            rtol=0,
        )
    ref = captum_attr.IntegratedGradients(view_model).attribute(x, target=2, n_steps=5, method="gausslegendre")
    torch.testing.assert_close(integrated_gradients(view_model, x, 2, steps=5), ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "kind,nt_type", [("mean", "smoothgrad"), ("square", "smoothgrad_sq"), ("var", "vargrad")]
)
def test_smoothgrad_matches_captum_noise_tunnel_on_same_draws(kind, nt_type, monkeypatch):
    model, x, samples, noise = small_cnn(), batch(3), 7, 0.2
    # our draw order: one randn(x.shape) per sample, scaled by noise * (max - min) per example
    gen = torch.Generator().manual_seed(5)
    eps = torch.stack([torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(samples)])
    noisy = x.unsqueeze(0) + noise_scale(x, noise).unsqueeze(0) * eps  # (S, N, ...)
    captum_layout = noisy.transpose(0, 1).reshape(-1, *x.shape[1:])  # captum repeats each example S times

    def fake_noise(inp, stdev, partition):
        assert partition == samples
        return captum_layout

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(fake_noise))
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=samples, stdevs=1.0, target=2, abs=False
    )
    ours = smoothgrad(
        model, x, 2, samples=samples, noise=noise, kind=kind, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-6)


def test_smoothgrad_closed_form_on_quadratic():
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    model = Quadratic(c)
    x = torch.tensor([[0.0, 1.0, 0.5, 0.25]], dtype=torch.float64)
    noise, samples = 0.1, 20_000
    sigma = noise * 1.0  # range of x is 1
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    mean = smoothgrad(model, x, 0, samples=samples, noise=noise, generator=gen())
    sq = smoothgrad(model, x, 0, samples=samples, noise=noise, kind="square", generator=gen())
    var = smoothgrad(model, x, 0, samples=samples, noise=noise, kind="var", generator=gen())
    se = 2 * c.abs() * sigma / samples**0.5  # standard error of the mean gradient
    assert ((mean[0] - 2 * c * x[0]).abs() <= 5 * se).all()
    true_var = 4 * c**2 * sigma**2
    assert ((var[0] - true_var).abs() <= 0.05 * true_var).all()  # relative s.e. of a variance: sqrt(2/S)=1%
    assert (
        (sq[0] - (4 * c**2 * x[0] ** 2 + true_var)).abs() <= 0.05 * true_var + 10 * se * 2 * c.abs()
    ).all()


def test_smoothgrad_noise_is_relative_and_seeded():
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    model = Quadratic(c)
    x = torch.tensor([[0.0, 1.0, 0.5, 0.25], [2.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    v1 = smoothgrad(model, x, 0, samples=16, kind="var", generator=g(1))
    v10 = smoothgrad(model, 10 * x, 0, samples=16, kind="var", generator=g(1))
    torch.testing.assert_close(v10, 100 * v1)  # sigma follows each input's range
    torch.testing.assert_close(noise_scale(x, 0.15).flatten(), torch.tensor([0.15, 0.3], dtype=torch.float64))
    torch.testing.assert_close(
        smoothgrad(model, x, 0, samples=4, generator=g(2)),
        smoothgrad(model, x, 0, samples=4, generator=g(2)),
        atol=0,
        rtol=0,
    )
    assert not torch.equal(
        smoothgrad(model, x, 0, samples=4, generator=g(2)), smoothgrad(model, x, 0, samples=4, generator=g(3))
    )
    torch.testing.assert_close(smoothgrad(model, x, 0, noise=0.0, samples=3), saliency(model, x, 0))


def test_param_grad_untouched_and_mode_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(192, 4),
    ).double()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel, strict=True):
        p.grad = s.clone()
    stats = model[1].running_mean.clone()
    x = batch(4)
    outs = [
        saliency(model, x, 1),
        input_x_gradient(model, x, 1),
        integrated_gradients(model, x, 1, steps=5),
        smoothgrad(model, x, 1, samples=3),
    ]
    assert all(torch.isfinite(o).all() for o in outs)
    for p, s in zip(model.parameters(), sentinel, strict=True):
        assert torch.equal(p.grad, s)
    assert model.training and model[1].training and not model[3].training
    assert torch.equal(model[1].running_mean, stats)  # evaluated in eval mode: no BN statistics update
    # eval-mode attributions are deterministic despite dropout
    torch.testing.assert_close(saliency(model, x, 1), saliency(model, x, 1), atol=0, rtol=0)


def test_frozen_parameters_still_work():
    model = small_cnn()
    for p in model.parameters():
        p.requires_grad_(False)
    assert saliency(model, batch(2), 0).abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "call,err,match",
    [
        (lambda m, x: saliency(m, x[0, 0, 0], 0), ValueError, "shape"),
        (lambda m, x: saliency(m, x, 5), ValueError, "target must be < number of classes"),
        (lambda m, x: saliency(m, x, -1), ValueError, "non-negative"),
        (
            lambda m, x: saliency(m, x, torch.tensor([0, 1])),
            ValueError,
            "target must be an int or have shape",
        ),
        (lambda m, x: saliency(m, x, torch.tensor([0.0, 1.0, 0.0, 1.0])), TypeError, "integer"),
        (lambda m, x: saliency(m, x, 1.5), TypeError, "target"),
        (lambda m, x: saliency(m, x.masked_fill(x > 0.5, float("nan")), 0), ValueError, "NaN"),
        (lambda m, x: saliency(m, x.long(), 0), TypeError, "floating"),
        (lambda m, x: saliency(m, x.numpy(), 0), TypeError, "torch.Tensor"),
        (lambda m, x: integrated_gradients(m, x, 0, rule="simpson"), ValueError, "rule must be one of"),
        (lambda m, x: integrated_gradients(m, x, 0, steps=0), ValueError, "steps"),
        (lambda m, x: integrated_gradients(m, x, 0, baseline=torch.zeros(3)), ValueError, "baseline"),
        (lambda m, x: integrated_gradients(m, x, 0, chunk_size=0), ValueError, "chunk_size"),
        (lambda m, x: smoothgrad(m, x, 0, kind="max"), ValueError, "kind must be one of"),
        (lambda m, x: smoothgrad(m, x, 0, noise=-1.0), ValueError, "noise"),
        (lambda m, x: smoothgrad(m, x, 0, samples=0), ValueError, "samples"),
        (lambda m, x: smoothgrad(m, x, 0, generator=3), TypeError, "generator"),
        (lambda m, x: saliency(lambda z: z.sum((1, 2, 3)), x, 0), ValueError, "logits of shape"),
    ],
)
def test_bad_input_raises_clear_errors(call, err, match):
    with pytest.raises(err, match=match):
        call(small_cnn(), batch(4))
