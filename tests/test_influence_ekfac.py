"""EK-FAC on convolutions: exact where the Kronecker factorization is exact, and its eigenvalues are the exact
Gauss–Newton matrix's diagonal in the Kronecker eigenbasis (the defining property of the correction)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.influence import exact_ggn, fit_ekfac, influence_scores


def _perm(out_dim: int, in_dim: int, bias: bool) -> torch.Tensor:
    """Flat parameter index (weight row-major, then bias) of each entry of the augmented (out, in[+1]) matrix."""
    cols = in_dim + int(bias)
    idx = torch.empty(out_dim, cols, dtype=torch.long)
    for o in range(out_dim):
        for i in range(in_dim):
            idx[o, i] = o * in_dim + i
        if bias:
            idx[o, in_dim] = out_dim * in_dim + o
    return idx.reshape(-1)


def test_ekfac_is_exact_for_a_conv_with_one_output_position_and_one_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten())
    x, y = torch.randn(1, 2, 3, 3), torch.tensor([1])
    factors = fit_ekfac(model, F.cross_entropy, (x, y))
    numel = sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(factors.matvec(torch.eye(numel)).double(), exact_ggn(model, F.cross_entropy, (x, y)),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_eigenvalues_are_the_ggn_diagonal_in_the_kronecker_eigenbasis(bias):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 2, padding=1, stride=1, bias=bias), nn.Flatten())  # 2 x 4 x 4 outputs
    x, y = torch.randn(6, 1, 3, 3), torch.randint(0, 32, (6,))
    factors = fit_ekfac(model, F.cross_entropy, (x, y))
    (layer,) = factors.layers
    q = torch.kron(layer.q_s, layer.q_a)  # columns: eigenvectors in the augmented (out, in') layout
    ggn = exact_ggn(model, F.cross_entropy, (x, y))
    perm = _perm(2, 4, bias)
    diag = torch.diagonal(q.T @ ggn[perm][:, perm] @ q)
    torch.testing.assert_close(layer.eigenvalues.reshape(-1), diag, atol=1e-8, rtol=1e-6)


def test_ekfac_on_a_small_cnn_tracks_the_exact_influence():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    x, y = torch.randn(40, 1, 6, 6), torch.randint(0, 4, (40,))
    factors = fit_ekfac(model, F.cross_entropy, (x, y))
    v = torch.randn(2, factors.numel, dtype=torch.float64)
    torch.testing.assert_close(factors.inverse_hvp(factors.matvec(v) + 0.3 * v, damping=0.3), v, atol=1e-8, rtol=1e-8)
    kw = dict(curvature="ggn", damping=0.05)
    ek = influence_scores(model, F.cross_entropy, (x, y), (x[:3], y[:3]), method="ekfac", **kw)
    ex = influence_scores(model, F.cross_entropy, (x, y), (x[:3], y[:3]), method="exact", **kw)
    assert torch.corrcoef(torch.stack([ek.flatten(), ex.flatten()]))[0, 1] > 0.7
