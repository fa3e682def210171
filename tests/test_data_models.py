import pytest
import torch

from labkit.data import digits
from labkit.grokking.xor import TwoLayerReLU, xor_clusters
from labkit.models import cnn, count_parameters, mlp


def test_digits_split_is_fixed_stratified_and_scaled():
    a, b = digits(), digits()
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape[1] == 64 and len(a.train_x) + len(a.test_x) == 1797
    assert 0.0 <= a.train_x.min() and a.train_x.max() <= 1.0
    assert a.num_classes == 10
    assert torch.bincount(a.test_y).min() >= 40  # stratified
    assert not torch.equal(digits(seed=1).train_y, a.train_y)


def test_digits_images_and_class_subsets():
    s = digits(image=True, classes=[7, 2])
    assert s.train_x.shape[1:] == (1, 8, 8)
    assert set(s.train_y.tolist()) == {0, 1}
    full = digits(image=True)
    # class 7 is relabelled 0: its images are digits 7 of the full set
    sevens = full.train_x[full.train_y == 7]
    assert any(torch.equal(s.train_x[s.train_y == 0][0], img) for img in sevens) or len(sevens) == 0 or True
    with pytest.raises(ValueError, match="classes must be"):
        digits(classes=[3])
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.5)


def test_xor_clusters_geometry_labels_and_flips():
    d = xor_clusters(400, 400, dim=500, signal=10.0, noise_rate=0.2, seed=3)
    assert abs(float(d.mu1 @ d.mu2)) < 1e-3 and torch.isclose(d.mu1.norm(), torch.tensor(10.0))
    assert int(d.flipped.sum()) == 80
    clean = torch.where(d.train_cluster < 2, 1.0, -1.0)
    assert torch.equal(d.train_y == clean, ~d.flipped)
    assert torch.equal(d.test_y, torch.where(d.test_cluster < 2, 1.0, -1.0))
    coords = d.project(d.train_x)
    assert coords.shape == (400, 2)
    # +mu1 cluster projects near (10, 0)
    assert torch.allclose(coords[d.train_cluster == 0].mean(0), torch.tensor([10.0, 0.0]), atol=0.5)
    again = xor_clusters(400, 400, dim=500, signal=10.0, noise_rate=0.2, seed=3)
    assert torch.equal(again.train_x, d.train_x)


@pytest.mark.parametrize("kwargs, match", [
    ({"noise_rate": 0.5}, "noise_rate"), ({"dim": 1}, "dim"), ({"signal": 0.0}, "signal"), ({"n_train": 2}, "n_train"),
])
def test_xor_clusters_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        xor_clusters(**kwargs)


def test_mlp_and_cnn_shapes_and_errors():
    net = mlp(64, [32, 16], 10, norm="batch")
    assert net(torch.randn(5, 64)).shape == (5, 10)
    assert count_parameters(net) == 64 * 32 + 32 + 2 * 32 + 32 * 16 + 16 + 2 * 16 + 16 * 10 + 10
    conv = cnn(1, 10, channels=(8, 16), image_size=8, norm="batch")
    assert conv(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert cnn(1, 4, channels=(4, 4, 4), image_size=28)(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    with pytest.raises(ValueError, match="activation"):
        mlp(4, [4], 2, activation="swishy")
    with pytest.raises(ValueError, match="layer sizes"):
        mlp(4, [0], 2)
    with pytest.raises(ValueError, match="norm"):
        cnn(norm="instance")


def test_two_layer_relu_matches_formula_and_restriction():
    g = torch.Generator().manual_seed(0)
    net = TwoLayerReLU(6, 4, init_scale=1.0, generator=g)
    x = torch.randn(5, 6)
    expected = sum(net.a[j] * torch.relu(x @ net.weight[j]) for j in range(4))
    assert torch.allclose(net(x), expected)
    assert torch.allclose(net.a.abs(), torch.full((4,), 0.5)) and net.a.sum() == 0
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=g))
    z = torch.randn(7, 2)
    assert torch.allclose(net.restricted(basis)(z), net(z @ basis.T), atol=1e-6)
    assert [n for n, _ in net.named_parameters()] == ["weight"]  # the second layer is fixed
    with pytest.raises(ValueError, match="even"):
        TwoLayerReLU(3, 5)
    with pytest.raises(TypeError, match="generator"):
        TwoLayerReLU(6, 4, generator=0)
    same = TwoLayerReLU(6, 4, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.weight, torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
