"""Modular-arithmetic splits (disjoint, complete, seeded) and the grokking models (one-hot MLP equals a
linear layer on one-hot inputs; the last-position transformer equals the full-sequence computation)."""

import pytest
import torch
from torch import nn

from labkit.data import Split
from labkit.grokking.models import OneHotMLP, OneLayerTransformer
from labkit.grokking.modular import ModularSplit, modular_arithmetic

REFERENCE = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: next(c for c in range(p) if (c * b) % p == a),
    "x2+y2": lambda a, b, p: (a * a + b * b) % p,
}


@pytest.mark.parametrize("op", sorted(REFERENCE))
def test_split_is_disjoint_complete_and_correct(op):
    p = 13
    data = modular_arithmetic(p, op=op, train_fraction=0.3, seed=4)
    assert isinstance(data, ModularSplit) and isinstance(data, Split)
    assert data.train_x.dtype == torch.long and data.train_x.shape[1] == 2 and data.test_x.shape[1] == 2
    pairs_tr = {tuple(r) for r in data.train_x.tolist()}
    pairs_te = {tuple(r) for r in data.test_x.tolist()}
    assert not pairs_tr & pairs_te
    everything = {(a, b) for a in range(p) for b in range(p) if op != "div" or b != 0}
    assert pairs_tr | pairs_te == everything
    assert len(pairs_tr) == round(0.3 * len(everything))
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        for (a, b), c in zip(x.tolist(), y.tolist(), strict=True):
            assert c == REFERENCE[op](a, b, p)
    assert data.num_classes == p


def test_split_is_seeded():
    a, b = modular_arithmetic(11, seed=3), modular_arithmetic(11, seed=3)
    c = modular_arithmetic(11, seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    moved = a.to("cpu")
    assert moved.p == 11 and moved.op == "add"


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=1), "p must"), (dict(p=7, op="pow"), "op must"), (dict(p=8, op="div"), "prime"),
    (dict(p=7, train_fraction=1.0), "train_fraction"),
])
def test_modular_arithmetic_rejects_bad_arguments(kwargs, match):
    p = kwargs.pop("p")
    with pytest.raises(ValueError, match=match):
        modular_arithmetic(p, **kwargs)


def test_one_hot_mlp_equals_mlp_on_concatenated_one_hot_inputs():
    torch.manual_seed(0)
    p = 7
    model = OneHotMLP(p, hidden=(16, 8))
    x = modular_arithmetic(p).train_x
    one_hot = torch.cat([nn.functional.one_hot(x[:, 0], p), nn.functional.one_hot(x[:, 1], p)], 1).float()
    first = one_hot @ model.embedding + model.bias
    ref = model.head(torch.relu(first))
    torch.testing.assert_close(model(x), ref)
    assert model.operand_embeddings().shape == (2, p, 16)
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        model(x.float())


def naive_transformer(model: OneLayerTransformer, x: torch.Tensor) -> torch.Tensor:
    """Textbook one-layer transformer, one example and one head at a time (loops, no batching)."""
    p, d_head = model.p, model.d_head
    out = []
    for a, b in x.tolist():
        resid = torch.stack([model.W_E[a], model.W_E[b], model.W_E[p]]) + model.W_pos
        heads = []
        for h in range(model.n_heads):
            sl = slice(h * d_head, (h + 1) * d_head)
            q, k, v = resid @ model.W_Q[:, sl], resid @ model.W_K[:, sl], resid @ model.W_V[:, sl]
            scores = q @ k.T / d_head**0.5
            scores = scores.masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
            heads.append(torch.softmax(scores, -1) @ v)
        h_all = resid + torch.cat(heads, -1) @ model.W_O
        h_all = h_all + model.mlp_out(torch.relu(model.mlp_in(h_all)))
        out.append((h_all @ model.W_U)[-1])
    return torch.stack(out)


def test_last_position_transformer_equals_naive_full_sequence():
    torch.manual_seed(1)
    p = 11
    model = OneLayerTransformer(p, d_model=16, n_heads=4, d_mlp=32).double()
    x = modular_arithmetic(p, train_fraction=0.5).train_x[:40]
    fast = model(x)
    assert fast.shape == (40, p)
    torch.testing.assert_close(fast, naive_transformer(model, x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast, model.forward_full(x)[:, -1], rtol=1e-10, atol=1e-10)
    # gradients agree too (the fast path is what trains)
    g_fast = torch.autograd.grad(fast.sum(), model.W_Q)[0]
    g_ref = torch.autograd.grad(naive_transformer(model, x).sum(), model.W_Q)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)
    assert model.operand_embeddings().shape == (1, p, 16)
    with pytest.raises(ValueError, match="divisible"):
        OneLayerTransformer(p, d_model=10, n_heads=4)


def test_one_hot_mlp_without_bias_is_the_reference_bias_free_mlp():
    torch.manual_seed(0)
    p = 7
    model = OneHotMLP(p, hidden=(16, 8), bias=False)
    assert model.bias is None
    assert all(name.endswith("weight") or name == "embedding" for name, _ in model.named_parameters())
    x = modular_arithmetic(p).train_x
    one_hot = torch.cat([nn.functional.one_hot(x[:, 0], p), nn.functional.one_hot(x[:, 1], p)], 1).float()
    torch.testing.assert_close(model(x), model.head(torch.relu(one_hot @ model.embedding)))
    # bias-free and ReLU: the logits are 3-homogeneous in the weights (scaling them is the NLM direction)
    before = model(x).detach()
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(2.0)
    torch.testing.assert_close(model(x), 8.0 * before)
