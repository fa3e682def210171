"""The tiny conditional denoiser: interface and that training learns both branches."""

import pytest
import torch

from labkit.diffusion import ring_mixture, train_denoiser
from labkit.diffusion.models import MLPDenoiser


@pytest.fixture(scope="module")
def data():
    g = ring_mixture(2, 3)
    x, comp = g.sample_components(2000, generator=torch.Generator().manual_seed(0))
    return g, x, g.labels[comp]


def test_denoiser_interface_and_preconditioning():
    torch.manual_seed(0)
    m = MLPDenoiser(2, 3, hidden=16, depth=1, sigma_data=1.0)
    x = torch.randn(5, 2)
    assert m(x, 0.5).shape == (5, 2) and m(x, torch.full((5,), 0.5), torch.tensor([0, 1, 2, 3, 0])).shape == (
        5,
        2,
    )
    # label None is the null class
    torch.testing.assert_close(m(x, 0.5), m(x, 0.5, torch.full((5,), 3)))
    # c_skip -> 1 and c_out -> 0 as sigma -> 0: the denoiser becomes the identity
    torch.testing.assert_close(m(x, 1e-6), x, atol=1e-5, rtol=0)
    d = MLPDenoiser(64, 10, hidden=32, sigma_data=0.5)  # image-shaped input is flattened and restored
    assert d(torch.rand(4, 1, 8, 8), 0.3, 7).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="label must hold"):
        m(x, 0.5, torch.tensor([0, 1, 2, 9, 0]))
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        m(x, 0.0)
    with pytest.raises(ValueError, match="features per sample"):
        m(torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser(2, 0, hidden=8)(x, 0.5, 1)


def test_training_learns_both_branches(data):
    g, x, y = data
    torch.manual_seed(0)
    m = MLPDenoiser(2, 2, hidden=64, depth=2, sigma_data=1.0)
    params = [p.detach().clone() for p in m.parameters()]
    hist = train_denoiser(m, x, y, steps=300, batch_size=256, lr=5e-3, p_mean=0.0, p_std=1.5, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(params, m.parameters(), strict=True))
    assert sum(hist.loss[-30:]) / 30 < 0.8 * sum(hist.loss[:30]) / 30
    probe = g.sample(500, sigma=3.0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for label in (0, 1):
            err_right = (m(probe, 3.0, label) - g.denoise(probe, 3.0, label)).norm(dim=1).mean()
            err_wrong = (m(probe, 3.0, label) - g.denoise(probe, 3.0, 1 - label)).norm(dim=1).mean()
            assert err_right < 0.5 * err_wrong
        err_u = (m(probe, 3.0) - g.denoise(probe, 3.0)).norm(dim=1).mean()
        err_u_vs_c = (m(probe, 3.0) - g.denoise(probe, 3.0, 0)).norm(dim=1).mean()
        assert err_u < 0.5 * err_u_vs_c
    with pytest.raises(ValueError, match="label_dropout must be > 0"):
        train_denoiser(m, x, y, steps=1, label_dropout=0.0, progress=False)
