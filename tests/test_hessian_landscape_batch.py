"""Small- vs large-batch minima and the loss-rise summary of Li et al. (2018), Sec. 5 / Fig. 3."""

import copy

import pytest
import torch
import torch.nn.functional as F

from labkit.hessian import filter_normalized_direction
from labkit.hessian.experiments import batch_size_minima, loss_rise, rescaled_copy, weight_norm
from labkit.models import mlp


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _net(seed=0):
    torch.manual_seed(seed)
    return mlp(5, [8], 2)


def test_weight_norm_is_the_norm_of_the_matrices_only():
    net = _net()
    expected = torch.cat([net[0].weight.detach().reshape(-1), net[2].weight.detach().reshape(-1)]).double().norm()
    assert weight_norm(net) == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="at least two dimensions"):
        weight_norm(torch.nn.Sequential(torch.nn.Flatten()))


def test_loss_rise_definition_and_generator_replay():
    net, data = _net(), _data()
    rise = loss_rise(net, F.cross_entropy, data, distance=0.3, directions=3, generator=torch.Generator().manual_seed(1))
    assert rise.rises.shape == (3, 2)
    assert rise.mean == pytest.approx(float(rise.rises.mean()))
    # by hand: the same draws from the same generator state
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = F.cross_entropy(net(data[0]), data[1]).double()
        for k in range(3):
            d = filter_normalized_direction(net, generator=g)
            for j, a in enumerate((-0.3, 0.3)):
                moved = copy.deepcopy(net)
                torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(net.parameters()) + a * d,
                                                    moved.parameters())
                expected = F.cross_entropy(moved(data[0]), data[1]).double() - base
                assert float(rise.rises[k, j]) == pytest.approx(float(expected), abs=1e-6)


def test_filter_normalized_rise_is_rescaling_invariant_raw_is_not():
    net, data = _net(), _data()
    twin = rescaled_copy(net, 4.0)
    fn = [loss_rise(m, F.cross_entropy, data, distance=0.5, directions=2, generator=torch.Generator().manual_seed(3))
          for m in (net, twin)]
    raw = [loss_rise(m, F.cross_entropy, data, distance=0.5, directions=2, kind="raw Gaussian",
                     generator=torch.Generator().manual_seed(3)) for m in (net, twin)]
    assert fn[0].mean == pytest.approx(fn[1].mean, abs=1e-5)
    assert abs(raw[0].mean - raw[1].mean) > 1e-3


def test_loss_rise_rejects_bad_options():
    net, data = _net(), _data()
    with pytest.raises(ValueError, match="kind"):
        loss_rise(net, F.cross_entropy, data, distance=0.5, directions=1, kind="layer")
    with pytest.raises(ValueError, match="distance"):
        loss_rise(net, F.cross_entropy, data, distance=0.0, directions=1)
    with pytest.raises(ValueError, match="directions"):
        loss_rise(net, F.cross_entropy, data, distance=0.5, directions=0)


def test_batch_size_minima_same_init_target_and_caller_untouched():
    net, data = _net(), _data()
    before = [p.detach().clone() for p in net.parameters()]
    minima = batch_size_minima(net, data, batch_sizes=[8, None], lr=0.1, target_loss=0.3, max_epochs=200)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    small, full = minima[8], minima[None]
    assert small.reached and full.reached
    assert small.train_loss < 0.3 and full.train_loss < 0.3
    assert small.steps == pytest.approx(small.epochs * 8)  # 64 examples / batch 8 = 8 steps an epoch
    assert full.steps == full.epochs and full.steps % 5 == 0  # checked every 5 full-batch steps
    assert small.weight_norm == pytest.approx(weight_norm(small.model))
    # a cap that is too short is reported, not hidden
    capped = batch_size_minima(net, data, batch_sizes=[None], lr=1e-4, target_loss=0.01, max_epochs=3)[None]
    assert not capped.reached and capped.steps == 3


def test_batch_size_minima_rejects_bad_options():
    net, data = _net(), _data()
    with pytest.raises(ValueError, match="batch_sizes"):
        batch_size_minima(net, data, batch_sizes=[], lr=0.1, target_loss=0.1, max_epochs=1)
    with pytest.raises(ValueError, match="batch_sizes\\[0\\]"):
        batch_size_minima(net, data, batch_sizes=[0], lr=0.1, target_loss=0.1, max_epochs=1)
    with pytest.raises(ValueError, match="momentum"):
        batch_size_minima(net, data, batch_sizes=[None], lr=0.1, target_loss=0.1, max_epochs=1, momentum=1.0)
