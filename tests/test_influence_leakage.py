"""labkit.influence.leakage: Deep Leakage from Gradients (Zhu et al., 2019, arXiv 1906.08935) with iDLG's label.

Oracles: a known input recovered from its gradient on a tiny sigmoid MLP; the label read from the last layer
against the true label (exact for non-negative activations); the gradient distance against a hand-written sum;
pruning against a sort by magnitude; side effects and bad input as for the other pillars.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_state import assert_same, snapshot

from labkit.influence.leakage import (
    DefenseSweep,
    Inversion,
    example_gradient,
    gradient_distance,
    gradient_inversion,
    label_from_gradients,
    prune_gradients,
    pruning_defense,
    sigmoid_mlp,
)


def tiny(seed: int = 0, d: int = 6, hidden: int = 8, classes: int = 3):
    torch.manual_seed(seed)
    net = sigmoid_mlp(d, [hidden], classes)
    x = torch.rand(1, d, generator=torch.Generator().manual_seed(seed + 100))
    y = torch.tensor([seed % classes])
    return net, x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_input_and_label(seed):
    net, x, y = tiny(seed)
    grads = example_gradient(net, F.cross_entropy, x, y)
    inv = gradient_inversion(net, F.cross_entropy, grads, x_shape=(1, 6), num_classes=3, steps=30,
                             generator=torch.Generator().manual_seed(seed))
    assert isinstance(inv, Inversion)
    assert int(inv.label) == int(y)
    assert torch.allclose(inv.x, x, atol=1e-3)
    assert inv.grad_distance < 1e-8
    assert inv.history.shape == (30,) and inv.history[-1] <= inv.history[0]


def test_adam_recovers_too():
    net, x, y = tiny(3)
    grads = example_gradient(net, F.cross_entropy, x, y)
    inv = gradient_inversion(net, F.cross_entropy, grads, x_shape=(1, 6), num_classes=3, steps=1500,
                             optimizer="adam", lr=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(inv.x, x, atol=1e-2)


def test_label_rule_is_exact_for_sigmoid_features():
    for seed in range(20):
        torch.manual_seed(seed)
        net = sigmoid_mlp(5, [7], 4)
        x = torch.randn(1, 5)
        for label in range(4):
            grads = example_gradient(net, F.cross_entropy, x, torch.tensor([label]))
            assert label_from_gradients(grads, num_classes=4) == label


def test_gradient_distance_by_hand():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    b = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert float(gradient_distance(a, b)) == pytest.approx(1 + 4 + 4)


def test_inversion_distance_matches_hand_computation():
    net, x, y = tiny(4)
    grads = example_gradient(net, F.cross_entropy, x, y)
    inv = gradient_inversion(net, F.cross_entropy, grads, x_shape=(1, 6), num_classes=3, steps=3,
                             generator=torch.Generator().manual_seed(1))
    again = example_gradient(net, F.cross_entropy, inv.x, inv.label)
    by_hand = float(sum(((g - t) ** 2).sum() for g, t in zip(again, grads, strict=True)))
    assert inv.grad_distance == pytest.approx(by_hand, rel=1e-4, abs=1e-10)


def test_prune_gradients_zeroes_smallest_entries():
    g = [torch.tensor([0.1, -5.0, 0.3]), torch.tensor([[-0.2, 4.0]])]
    out = prune_gradients(g, 0.4)          # 2 of 5 entries: 0.1 and -0.2
    assert torch.equal(out[0], torch.tensor([0.0, -5.0, 0.3]))
    assert torch.equal(out[1], torch.tensor([[0.0, 4.0]]))
    assert torch.equal(g[0], torch.tensor([0.1, -5.0, 0.3]))          # input left as found
    per = prune_gradients(g, 0.5, per_layer=True)                      # round(1.5)=2 of 3, round(1.0)=1 of 2
    assert torch.equal(per[0], torch.tensor([0.0, -5.0, 0.0]))
    assert torch.equal(per[1], torch.tensor([[0.0, 4.0]]))
    assert all(torch.equal(a, b) for a, b in zip(prune_gradients(g, 0.0), g, strict=True))
    assert all((t == 0).all() for t in prune_gradients(g, 1.0))


def test_heavy_pruning_defeats_attack():
    torch.manual_seed(0)
    net = sigmoid_mlp(16, [16], 4)
    x = torch.rand(2, 16, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([1, 2])
    sweep = pruning_defense(net, F.cross_entropy, (x, y), fractions=[0.0, 0.99], num_classes=4, steps=30,
                            generator=torch.Generator().manual_seed(0))
    assert isinstance(sweep, DefenseSweep)
    assert sweep.x.shape == (2, 2, 16) and sweep.mse.shape == (2, 2)
    assert (sweep.max_error[:, 0] < 1e-3).all()
    assert (sweep.mse[:, 1] > 1e-2).all()
    assert torch.equal(sweep.labels[:, 0], y)


def test_pruning_defense_replays_the_dummy():
    net, x, y = tiny(5)
    gen = torch.Generator().manual_seed(3)
    sweep = pruning_defense(net, F.cross_entropy, (x, y), fractions=[0.0, 0.0], num_classes=3, steps=2,
                            generator=gen)
    assert torch.equal(sweep.x[0, 0], sweep.x[0, 1])


def test_model_left_as_found():
    net, x, y = tiny(6)
    net[0].weight.grad = torch.ones_like(net[0].weight)
    net.eval()
    net[2].weight.requires_grad_(False)
    before = snapshot(net)
    grads = example_gradient(net, F.cross_entropy, x, y)
    assert len(grads) == 3                   # the frozen weight is not differentiated
    gradient_inversion(net, F.cross_entropy, grads, x_shape=(1, 6), num_classes=3, steps=2,
                       label=int(y), generator=torch.Generator().manual_seed(0))
    assert_same(before, snapshot(net))


def test_bad_input():
    net, x, y = tiny(7)
    grads = example_gradient(net, F.cross_entropy, x, y)
    kw = dict(x_shape=(1, 6), num_classes=3, steps=2)
    with pytest.raises(ValueError, match="target_grads"):
        gradient_inversion(net, F.cross_entropy, grads[:-1], **kw)
    with pytest.raises(ValueError, match="NaN"):
        gradient_inversion(net, F.cross_entropy, [g * float("nan") for g in grads], **kw)
    with pytest.raises(ValueError, match="steps"):
        gradient_inversion(net, F.cross_entropy, grads, x_shape=(1, 6), num_classes=3, steps=0)
    with pytest.raises(ValueError, match="x_shape"):
        gradient_inversion(net, F.cross_entropy, grads, x_shape=(), num_classes=3, steps=2)
    with pytest.raises(ValueError, match="one example"):
        gradient_inversion(net, F.cross_entropy, grads, x_shape=(2, 6), num_classes=3, steps=2)
    with pytest.raises(ValueError, match="optimizer"):
        gradient_inversion(net, F.cross_entropy, grads, optimizer="sgd", **kw)
    with pytest.raises(TypeError, match="generator"):
        gradient_inversion(net, F.cross_entropy, grads, generator=0, **kw)
    with pytest.raises(ValueError, match="label"):
        gradient_inversion(net, F.cross_entropy, grads, label=7, **kw)
    with pytest.raises(ValueError, match="fraction"):
        prune_gradients(grads, 1.5)
    with pytest.raises(ValueError, match="num_classes"):
        label_from_gradients(grads, num_classes=5)
    with pytest.raises(TypeError, match="target_grads"):
        gradient_inversion(net, F.cross_entropy, grads[0], **kw)
    other = sigmoid_mlp(6, [8], 3)
    with pytest.raises(ValueError, match="not a parameter of model"):
        gradient_inversion(net, F.cross_entropy, grads, params=list(other.parameters()), **kw)
    with pytest.raises(ValueError, match="layer sizes"):
        sigmoid_mlp(0, [3], 2)
