"""Class activation maps against hand computations on tiny CNNs and Captum's LayerGradCam."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.attributions import (
    conservation_error,
    grad_cam,
    grad_cam_pp,
    norm_grad,
    smooth_grad_cam_pp,
    xgrad_cam,
)
from labkit.models import cnn

captum_attr = pytest.importorskip("captum.attr")


def tiny(head: nn.Module | None = None, seed: int = 0) -> nn.Sequential:
    """conv(1->3) -> relu [layer = model[1]] -> head -> GAP -> linear(3->4)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        head or nn.Identity(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 4),
    ).double()


def batch(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def hand_terms(model: nn.Sequential, x: torch.Tensor, c: int):
    """Activation and, for a GAP + linear head, the analytic gradient dS_c/dA_kij = w_ck / (h w)."""
    a = F.relu(F.conv2d(x, model[0].weight, model[0].bias, padding=1)).detach()
    g = (model[5].weight[c] / (a.shape[2] * a.shape[3])).detach().reshape(1, -1, 1, 1).expand_as(a)
    return a, g


def test_grad_cam_xgrad_cam_norm_grad_match_hand_computation():
    model, x, c = tiny(), batch(), 2
    a, g = hand_terms(model, x, c)
    hand = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(grad_cam(model, x, c, layer=model[1]), hand)
    w = (a * g).sum((2, 3), keepdim=True) / a.sum((2, 3), keepdim=True)
    w = torch.where(a.sum((2, 3), keepdim=True) > 0, w, torch.zeros_like(w))
    torch.testing.assert_close(xgrad_cam(model, x, c, layer=model[1]), F.relu((w * a).sum(1)))
    torch.testing.assert_close(norm_grad(model, x, c, layer=model[1]), a.norm(dim=1) * g.norm(dim=1))


def test_grad_cam_pp_closed_form_matches_paper_formula():
    model, x, c = tiny(), batch(), 1
    a, g = hand_terms(model, x, c)
    denom = 2 * g**2 + a.sum((2, 3), keepdim=True) * g**3  # pytorch-grad-cam's / the paper's eq. 19
    alpha = torch.where(denom != 0, g**2 / denom, torch.zeros_like(g))
    w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    torch.testing.assert_close(grad_cam_pp(model, x, c, layer=model[1]), F.relu((w * a).sum(1)))
    # the 'exact' derivatives agree when everything after the layer is piecewise linear
    torch.testing.assert_close(
        grad_cam_pp(model, x, c, layer=model[1], derivatives="exact"),
        grad_cam_pp(model, x, c, layer=model[1]),
    )


class Square(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.square()


def test_grad_cam_pp_exact_uses_true_higher_derivatives():
    """Head S = sum_k w_k mean(A_k^2): S' = 2 w A / hw, S'' = 2 w / hw, S''' = 0 (hand derivatives)."""
    model, x = tiny(Square()), batch()
    c = int((model[5].weight > 0).sum(1).argmax())  # a class with positive weights: a non-zero map
    a = F.relu(F.conv2d(x, model[0].weight, model[0].bias, padding=1)).detach()
    hw = a.shape[2] * a.shape[3]
    w = model[5].weight[c].detach().reshape(1, -1, 1, 1)
    s1, s2 = 2 * w * a / hw, (2 * w / hw).expand_as(a)
    d2, d3 = s1**2 + s2, s1**3 + 3 * s1 * s2
    denom = 2 * d2 + a.sum((2, 3), keepdim=True) * d3
    alpha = torch.where(denom != 0, d2 / denom, torch.zeros_like(d2))
    hand = ((alpha * F.relu(s1)).sum((2, 3), keepdim=True) * a).sum(1)
    exact = grad_cam_pp(model, x, c, layer=model[1], derivatives="exact", upsample=False, relu=False)
    torch.testing.assert_close(exact, hand)
    assert hand.abs().max() > 0
    closed = grad_cam_pp(model, x, c, layer=model[1], upsample=False, relu=False)
    assert (exact - closed).abs().max() > 1e-3 * closed.abs().max()  # the approximation differs here


def test_grad_cam_matches_captum_layer_grad_cam():
    torch.manual_seed(0)
    model = cnn(1, 5, channels=(4, 6, 8), image_size=8).double()
    x, t = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    for layer in (model[0], model[2], model[4]):
        ref = captum_attr.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        torch.testing.assert_close(grad_cam(model, x, t, layer=layer, upsample=False), ref.squeeze(1))


def test_upsampling_and_smooth_grad_cam_pp():
    torch.manual_seed(0)
    model = cnn(1, 5, channels=(4, 6), image_size=8).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    small = grad_cam(model, x, 1, layer=model[2], upsample=False)
    assert small.shape == (2, 4, 4)
    up = grad_cam(model, x, 1, layer=model[2])
    assert up.shape == (2, 8, 8)
    torch.testing.assert_close(up, F.interpolate(small[:, None], size=(8, 8), mode="bilinear").squeeze(1))
    torch.testing.assert_close(
        smooth_grad_cam_pp(model, x, 1, layer=model[2], noise=0.0, samples=3),
        grad_cam_pp(model, x, 1, layer=model[2]),
    )
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(
        smooth_grad_cam_pp(model, x, 1, layer=model[2], generator=g(), samples=4),
        smooth_grad_cam_pp(model, x, 1, layer=model[2], generator=g(), samples=4),
    )


def test_conservation_error_of_grad_cam_and_xgrad_cam():
    model, x, c = tiny(), batch(), 0
    with torch.no_grad():
        s = model(x)[:, c]
    bias = model[5].bias[c].detach()
    # GAP + linear: sum of the un-ReLU'd Grad-CAM map is S - bias
    torch.testing.assert_close(
        conservation_error(model, x, c, layer=model[1], method=grad_cam), (bias / s).abs()
    )


def test_cam_param_grad_untouched_mode_restored():
    torch.manual_seed(0)
    model = cnn(1, 5, channels=(4, 6), image_size=8, norm="batch").double().train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    for f in (grad_cam, grad_cam_pp, xgrad_cam, norm_grad, smooth_grad_cam_pp):
        f(model, x, 0, layer=model[2])
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_cam_bad_inputs():
    model, x = tiny(), batch()
    with pytest.raises(ValueError, match="not a submodule"):
        grad_cam(model, x, 0, layer=nn.ReLU())
    with pytest.raises(TypeError, match="layer must be an nn.Module"):
        grad_cam(model, x, 0, layer="1")
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        grad_cam(model, x, 0, layer=model[4])
    with pytest.raises(ValueError, match="derivatives must be one of"):
        grad_cam_pp(model, x, 0, layer=model[1], derivatives="approx")
    with pytest.raises(ValueError, match="target must be < number of classes"):
        xgrad_cam(model, x, 9, layer=model[1])
    with pytest.raises(ValueError, match="NaN"):
        norm_grad(model, x * float("nan"), 0, layer=model[1])
    wrapped = WithUnused(model)
    with pytest.raises(ValueError, match="not called"):
        grad_cam(wrapped, x, 0, layer=wrapped.unused)


class WithUnused(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.unused = net, nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
