"""Epsilon-LRP: a closed form on a tiny net, input x gradient at epsilon = 0, conservation, and the broken
implementation invariance that makes it Integrated Gradients' contrast method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.attributions import input_x_gradient, integrated_gradients, lrp_epsilon
from labkit.models import mlp


def tiny_net() -> nn.Sequential:
    """2 -> 2 -> 1 with hand-picked weights (float64)."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -1.0]))
        net[2].weight.copy_(torch.tensor([[2.0, 1.0]]))
        net[2].bias.copy_(torch.tensor([0.25]))
    return net


def test_closed_form_on_a_tiny_net():
    # x = (1, 2): z1 = 1 + 4 + 0.5 = 5.5, z2 = 3 - 2 - 1 = 0 -> a = (5.5, 0); out = 11 + 0 + 0.25 = 11.25
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    eps = 0.5
    out = 11.25
    r_hidden = 5.5 * 2.0 * out / (out + eps)  # unit 2 is inactive (a = 0): no relevance
    expected = torch.tensor([[1.0 * 1.0, 2.0 * 2.0]], dtype=torch.float64) * r_hidden / (5.5 + eps)
    got = lrp_epsilon(tiny_net(), x, 0, epsilon=eps)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_negative_preactivation_uses_the_sign_of_z():
    # one linear layer, z = -2 - 1 = -3 < 0: R_i = x_i w_i z / (z - eps)
    net = nn.Sequential(nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-2.0, -1.0]]))
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    got = lrp_epsilon(net, x, 0, epsilon=1.0)
    torch.testing.assert_close(got, torch.tensor([[-2.0, -1.0]], dtype=torch.float64) * -3.0 / -4.0)


def test_epsilon_zero_is_input_times_gradient_on_a_relu_mlp():
    torch.manual_seed(0)
    net = mlp(6, [8, 8], 4).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(lrp_epsilon(net, x, t, epsilon=0.0), input_x_gradient(net, x, t),
                               rtol=1e-10, atol=1e-12)


def test_conservation_without_biases_at_epsilon_zero():
    torch.manual_seed(1)
    net = mlp(6, [8, 8], 3, bias=False).double()
    x = torch.rand(4, 6, dtype=torch.float64)
    r = lrp_epsilon(net, x, 2, epsilon=0.0)
    torch.testing.assert_close(r.sum(1), net(x)[:, 2], rtol=1e-10, atol=1e-12)


def test_flatten_and_image_shaped_input():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    r = lrp_epsilon(net, x, 1, epsilon=0.0)
    assert r.shape == x.shape
    torch.testing.assert_close(r, input_x_gradient(net, x, 1), rtol=1e-10, atol=1e-12)


def rescaled_twin(net: nn.Sequential, scale: torch.Tensor) -> nn.Sequential:
    """Same function: hidden unit j's incoming weights and bias times c_j, outgoing weights over c_j."""
    twin = mlp(6, [8], 3).double()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        twin[0].weight.mul_(scale[:, None])
        twin[0].bias.mul_(scale)
        twin[2].weight.div_(scale[None, :])
    return twin


def test_epsilon_breaks_implementation_invariance_integrated_gradients_does_not():
    torch.manual_seed(3)
    net = mlp(6, [8], 3).double()
    twin = rescaled_twin(net, torch.exp(torch.randn(8, dtype=torch.float64)))
    x = torch.rand(10, 6, dtype=torch.float64)
    torch.testing.assert_close(net(x), twin(x))
    torch.testing.assert_close(integrated_gradients(net, x, 0, steps=16), integrated_gradients(twin, x, 0, steps=16))
    torch.testing.assert_close(lrp_epsilon(net, x, 0, epsilon=0.0), lrp_epsilon(twin, x, 0, epsilon=0.0))
    assert (lrp_epsilon(net, x, 0, epsilon=0.5) - lrp_epsilon(twin, x, 0, epsilon=0.5)).abs().max() > 1e-3


def test_refuses_unsupported_models_and_bad_epsilon():
    with pytest.raises(TypeError, match="model\\[0\\] is Conv2d"):
        lrp_epsilon(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.rand(1, 1, 4, 4), 0)
    with pytest.raises(TypeError, match="nn.Sequential"):
        lrp_epsilon(nn.Linear(2, 2), torch.rand(1, 2), 0)
    with pytest.raises(ValueError, match="epsilon"):
        lrp_epsilon(tiny_net(), torch.rand(1, 2, dtype=torch.float64), 0, epsilon=-1.0)


def test_leaves_the_model_as_found():
    net = tiny_net().train()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lrp_epsilon(net, torch.rand(3, 2, dtype=torch.float64), 0)
    assert net.training and all(m.training for m in net)
    assert torch.equal(net[0].weight.grad, torch.ones_like(net[0].weight))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
