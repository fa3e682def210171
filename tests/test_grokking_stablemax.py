"""StableMax formula and gradient, its cross-entropy against a float64 reference, Softmax Collapse."""

import math

import pytest
import torch

from labkit.grokking import (
    classification_loss,
    log_stablemax,
    mse_one_hot_loss,
    softmax_collapse_fraction,
    softmax_cross_entropy,
    stable_s,
    stablemax,
    stablemax_cross_entropy,
)


def reference_s(x: float) -> float:
    return x + 1.0 if x >= 0 else 1.0 / (1.0 - x)


def test_stable_s_matches_the_piecewise_formula():
    xs = [-1e6, -37.5, -2.0, -1e-8, 0.0, 1e-8, 0.5, 3.0, 1e6]
    got = stable_s(torch.tensor(xs, dtype=torch.float64))
    assert got.tolist() == pytest.approx([reference_s(x) for x in xs], rel=1e-15)


def test_stable_s_gradient_is_continuous_and_matches_closed_form():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(stable_s(x).sum(), x)
    expected = [1 / (1 + 3) ** 2, 1 / 1.5**2, 1.0, 1.0, 1.0]  # d/dx 1/(1-x) = 1/(1-x)^2; d/dx (x+1) = 1
    assert g.tolist() == pytest.approx(expected, rel=1e-12)
    assert torch.autograd.gradcheck(stable_s, (torch.tensor([-2.0, -0.3, 0.7], dtype=torch.float64,
                                                            requires_grad=True),))


def test_stablemax_probabilities_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64)
    s = [3.0, 0.5, 1.0]
    expected = [v / sum(s) for v in s]
    assert stablemax(logits).squeeze(0).tolist() == pytest.approx(expected, rel=1e-14)
    assert log_stablemax(logits).exp().squeeze(0).tolist() == pytest.approx(expected, rel=1e-14)
    assert stablemax(logits.t(), dim=0).squeeze(1).tolist() == pytest.approx(expected, rel=1e-14)


def test_stablemax_cross_entropy_equals_float64_reference_and_its_gradient():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 11, generator=gen) * 20).requires_grad_(True)
    target = torch.randint(0, 11, (64,), generator=gen)
    loss = stablemax_cross_entropy(logits, target)
    x64 = logits.detach().double().requires_grad_(True)
    s = torch.where(x64 >= 0, x64 + 1, 1 / (1 - x64))  # naive reference (fine in float64 for these values)
    ref = -(s[torch.arange(64), target] / s.sum(1)).log().mean()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(ref, x64)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-5, atol=1e-9)
    total = stablemax_cross_entropy(logits, target, reduction="sum")
    assert total.item() == pytest.approx(64 * loss.item(), rel=1e-5)
    assert stablemax_cross_entropy(logits, target, reduction="none").shape == (64,)


def test_stablemax_cross_entropy_has_no_collapse_where_softmax_does():
    logits = torch.tensor([[0.0, 60.0, -5.0]])
    target = torch.tensor([1])
    assert softmax_cross_entropy(logits, target).item() == 0.0  # float32 absorption
    sm = stablemax_cross_entropy(logits, target).item()
    assert sm > 0 and math.isclose(sm, -math.log(61 / (61 + 1 + 1 / 6)), rel_tol=1e-6)


def test_softmax_float64_option_and_classification_loss():
    logits = torch.tensor([[0.0, 30.0]])
    target = torch.tensor([1])
    assert softmax_cross_entropy(logits, target).item() == 0.0
    assert softmax_cross_entropy(logits, target, dtype=torch.float64).item() > 0.0
    assert classification_loss("softmax64")(logits, target).item() > 0.0
    assert classification_loss("stablemax") is stablemax_cross_entropy
    with pytest.raises(ValueError, match="kind"):
        classification_loss("sparsemax")


def test_softmax_collapse_fraction_on_crafted_logits():
    logits = torch.tensor([
        [0.0, 100.0, 0.0],   # collapsed in float32 and float64
        [0.0, 30.0, 0.0],    # float32 only: exp(-30) is below float32's epsilon, above float64's
        [0.0, 2.0, 0.0],     # not collapsed
        [100.0, 0.0, 0.0],   # confidently wrong: loss 100, never collapsed
    ])
    target = torch.tensor([1, 1, 1, 1])
    assert softmax_collapse_fraction(logits, target) == pytest.approx(0.5)
    assert softmax_collapse_fraction(logits, target, dtype=torch.float64) == pytest.approx(0.25)
    # the collapsed examples are exactly those whose float32 gradient on the correct logit is zero
    x = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x, target, reduction="sum"), x)
    assert (g[:, 1] == 0).tolist() == [True, True, False, False]


@pytest.mark.parametrize("bad", [torch.zeros(3, 4, dtype=torch.long), torch.zeros(4)])
def test_bad_inputs_raise(bad):
    with pytest.raises((TypeError, ValueError)):
        stablemax_cross_entropy(bad, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        stablemax_cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="reduction"):
        stablemax_cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 2]), reduction="avg")


def test_mse_one_hot_loss_by_hand():
    logits = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    # example 0: (0, 0, 2) -> 4 / 2 = 2; example 1: (0.5, 0.5, -1) -> 1.5 / 2 = 0.75
    assert mse_one_hot_loss(logits, target).item() == pytest.approx((2 + 0.75) / 2)
    assert mse_one_hot_loss(logits, target, reduction="none").tolist() == pytest.approx([2.0, 0.75])
    assert classification_loss("mse") is mse_one_hot_loss


def test_stablemax_cross_entropy_gradient_is_finite_at_zero_and_extreme_logits():
    logits = torch.tensor([[0.0, 1.0, -1.0], [1e30, 0.0, -1e30], [-1e30, 2.0, 1e30]], dtype=torch.float64,
                          requires_grad=True)
    target = torch.tensor([0, 0, 1])
    loss = stablemax_cross_entropy(logits, target, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    # row 0 by hand: s = (1, 2, 1/2), S = 3.5; d/dx_j [log S - log s_0] = s'_j / S - [j = 0] s'_0 / s_0
    s_prime = torch.tensor([1.0, 1.0, 0.25], dtype=torch.float64)
    expected = s_prime / 3.5 - torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(g[0], expected, rtol=1e-12, atol=1e-15)
