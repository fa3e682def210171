"""Saliency at every layer, layer combination, class sensitivity and the pointing game, against hand
computations on tiny CNNs and scipy's rank correlation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.attributions import (
    combine_layer_maps,
    conv_blocks,
    grad_cam,
    layer_maps,
    map_correlation,
    max_min_class_correlation,
    norm_grad,
    pointing_game,
)
from labkit.models import cnn


def tiny() -> nn.Sequential:
    """conv(1->3) -> relu [model[1]] -> GAP -> linear(3->4): dS_c/dA_kij = w_ck / (h w), constant in space."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)
    ).double()


def batch(n: int = 4, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# --- correlations -------------------------------------------------------------------------------------


def test_map_correlation_matches_hand_values_with_ties():
    a = torch.tensor([[[1.0, 2.0], [2.0, 3.0]], [[0.0, 1.0], [2.0, 3.0]]])
    b = torch.tensor([[[1.0, 3.0], [2.0, 4.0]], [[3.0, 2.0], [1.0, 0.0]]])
    # ranks of a[0] with the tie averaged: [0, 1.5, 1.5, 3]; of b[0]: [0, 2, 1, 3]
    ra, rb = torch.tensor([0.0, 1.5, 1.5, 3.0]), torch.tensor([0.0, 2.0, 1.0, 3.0])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    hand = (ra * rb).sum() / (ra.norm() * rb.norm())
    got = map_correlation(a, b)
    torch.testing.assert_close(got[0], hand)
    torch.testing.assert_close(got[1], torch.tensor(-1.0))  # a reversed ranking
    pearson = map_correlation(a, b, kind="pearson")
    fa, fb = a[0].flatten() - a[0].mean(), b[0].flatten() - b[0].mean()
    torch.testing.assert_close(pearson[0], (fa * fb).sum() / (fa.norm() * fb.norm()))
    assert got.dtype == a.dtype and got.shape == (2,)


def test_map_correlation_agrees_with_scipy_spearman_on_tied_maps():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 4, (5, 7, 7), generator=gen).double()  # many ties, like ReLU'd maps
    b = torch.randn(5, 7, 7, generator=gen, dtype=torch.float64).clamp_min(0)
    ref = torch.tensor([stats.spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(map_correlation(a, b), ref)


def test_map_correlation_is_nan_for_constant_maps_and_invariant_to_monotone_maps():
    a = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[1] = 0.0  # an all-zero map: correlation undefined
    b[2] = 2.5
    got = map_correlation(a, b)
    assert got[0].item() == pytest.approx(1.0)
    assert math.isnan(got[1].item()) and math.isnan(got[2].item())
    torch.testing.assert_close(map_correlation(a, a.exp() * 3 - 1), torch.ones(3))  # ranks only
    assert map_correlation(a, a.exp(), kind="pearson")[0] < 1


def test_map_correlation_rejects_bad_arguments():
    a = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        map_correlation(a, torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="kind"):
        map_correlation(a, a, kind="kendall")
    with pytest.raises(TypeError, match="floating"):
        map_correlation(a, torch.ones(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        map_correlation(a, a.numpy())
    with pytest.raises(ValueError, match="NaN"):
        map_correlation(a, torch.full((2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="at least 2 values"):
        map_correlation(torch.rand(2, 1), torch.rand(2, 1))
    with pytest.raises(ValueError, match="rtol"):
        map_correlation(a, a, rtol=-1)


# --- class sensitivity --------------------------------------------------------------------------------


def test_norm_grad_is_class_blind_before_a_gap_linear_head():
    """With a GAP + linear head the gradient is w_c / (h w) everywhere, so NormGrad = ||A_ij|| ||w_c|| / hw:
    the map for any class is the same map up to a factor, and its max/min correlation is exactly 1."""
    model, x = tiny(), batch()
    corr = max_min_class_correlation(norm_grad, model, x, layer=model[1])
    torch.testing.assert_close(corr, torch.ones(4, dtype=torch.float64))


def test_max_min_class_correlation_matches_hand_computation():
    stats = pytest.importorskip("scipy.stats")
    model, x = tiny(), batch()
    with torch.no_grad():
        logits = model(x)
    a = F.relu(F.conv2d(x, model[0].weight, model[0].bias, padding=1))
    w = model[4].weight  # Grad-CAM at the last conv layer = CAM: relu(sum_k w_ck A_k) / hw
    cam = lambda c: F.relu(torch.einsum("nk,nkij->nij", w[c], a)) / 36  # noqa: E731
    top, bottom = cam(logits.argmax(1)), cam(logits.argmin(1))
    ours = max_min_class_correlation(grad_cam, model, x, layer=model[1], upsample=False)
    for i in range(4):
        if top[i].max() == top[i].min() or bottom[i].max() == bottom[i].min():
            assert math.isnan(ours[i].item())
        else:
            ref = stats.spearmanr(top[i].flatten().detach(), bottom[i].flatten().detach())[0]
            assert ours[i].item() == pytest.approx(ref, abs=1e-10)
    # the signed CAMs (relu=False) of two classes: Pearson correlation of two fixed combinations of A
    signed = max_min_class_correlation(grad_cam, model, x, layer=model[1], upsample=False, relu=False, kind="pearson")
    hand = map_correlation(
        torch.einsum("nk,nkij->nij", w[logits.argmax(1)], a), torch.einsum("nk,nkij->nij", w[logits.argmin(1)], a),
        kind="pearson",
    )
    torch.testing.assert_close(signed, hand.detach())


def test_max_min_class_correlation_rejects_bad_arguments():
    model, x = tiny(), batch()
    with pytest.raises(TypeError, match="method"):
        max_min_class_correlation("grad_cam", model, x, layer=model[1])
    with pytest.raises(TypeError, match="nn.Module"):
        max_min_class_correlation(grad_cam, lambda z: z, x, layer=model[1])
    with pytest.raises(ValueError, match="logits"):
        max_min_class_correlation(grad_cam, nn.Sequential(nn.Identity()), x, layer=model[1])
    with pytest.raises(ValueError, match="NaN"):
        max_min_class_correlation(grad_cam, model, x * float("nan"), layer=model[1])


# --- maps at every layer ------------------------------------------------------------------------------


def test_conv_blocks_of_labkit_cnn_are_its_conv_blocks_in_order():
    model = cnn(1, 5, channels=(4, 6, 8), image_size=8)
    blocks = conv_blocks(model)
    assert list(blocks) == ["0", "2", "4"]
    assert all(blocks[k] is model[int(k)] for k in blocks)
    with pytest.raises(ValueError, match="Conv2d"):
        conv_blocks(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(TypeError, match="nn.Module"):
        conv_blocks([nn.Conv2d(1, 1, 1)])


def test_layer_maps_equal_one_call_per_layer_and_are_named_by_module_path():
    torch.manual_seed(0)
    model = cnn(1, 5, channels=(4, 6), image_size=8).double()
    x, t = batch(3, 8), torch.tensor([0, 3, 4])
    maps = layer_maps(grad_cam, model, x, t, layers=[model[0], model[2]])
    assert list(maps) == ["0", "2"]
    torch.testing.assert_close(maps["2"], grad_cam(model, x, t, layer=model[2]))
    named = layer_maps(norm_grad, model, x, t, layers={"first": model[0]}, upsample=False)
    torch.testing.assert_close(named["first"], norm_grad(model, x, t, layer=model[0], upsample=False))
    assert named["first"].shape == (3, 8, 8) and maps["2"].shape == (3, 8, 8)


def test_layer_maps_reject_bad_arguments():
    model, x = tiny(), batch()
    with pytest.raises(TypeError, match="method"):
        layer_maps(None, model, x, 0, layers=[model[1]])
    with pytest.raises(ValueError, match="at least one"):
        layer_maps(grad_cam, model, x, 0, layers=[])
    with pytest.raises(ValueError, match="not a submodule"):
        layer_maps(grad_cam, model, x, 0, layers={"other": nn.ReLU()})
    with pytest.raises(TypeError, match="single module"):
        layer_maps(grad_cam, model, x, 0, layers=model[1])
    with pytest.raises(TypeError, match="nn.Module"):
        layer_maps(grad_cam, model, x, 0, layers=["1"])


# --- combination and pointing ---------------------------------------------------------------------------


def test_combine_layer_maps_is_the_product_of_min_max_normalised_maps():
    a = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    b = torch.tensor([[[3.0, 1.0], [1.0, 2.0]]])
    hand = (a / 4) * ((b - 1) / 2)
    torch.testing.assert_close(combine_layer_maps([a, b]), hand)
    torch.testing.assert_close(combine_layer_maps({"x": a, "y": b}), hand)
    flat = torch.full_like(a, 7.0)  # a constant map leaves the product unchanged
    torch.testing.assert_close(combine_layer_maps([a, flat]), a / 4)
    assert combine_layer_maps([a]).max() == 1 and combine_layer_maps([a]).min() == 0


def test_combine_layer_maps_rejects_bad_arguments():
    a = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="upsample=True"):
        combine_layer_maps([a, torch.rand(2, 2, 2)])
    with pytest.raises(ValueError, match="at least one"):
        combine_layer_maps([])
    with pytest.raises(TypeError, match="one tensor"):
        combine_layer_maps(a)
    with pytest.raises(TypeError, match="torch.Tensor"):
        combine_layer_maps([a, a.numpy()])


def test_pointing_game_hits_misses_and_constant_maps():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 2] = 5.0  # peak inside the mask
    maps[1, 3, 3] = 5.0  # peak outside
    masks = torch.zeros(3, 4, 4)
    masks[:, :2, :] = 1.0  # object: the top half; the all-zero map 2 would "point" at (0, 0) by argmax
    assert pointing_game(maps, masks).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="shape"):
        pointing_game(maps, masks[:, :2])
    with pytest.raises(TypeError, match="masks"):
        pointing_game(maps, masks.numpy())


def test_grad_cam_at_the_last_layer_points_at_the_class_it_was_built_for():
    """A hand-built two-class net: channel 0 fires on the left half, channel 1 on the right half, class c
    reads channel c. Grad-CAM (= CAM here) for class c must point into the half of channel c."""
    model = nn.Sequential(
        nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=False)
    ).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        model[4].weight.copy_(torch.eye(2))
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 0], x[0, 1, 2, 3] = 1.0, 2.0  # class 1 is the top class, class 0 the least likely
    left = torch.zeros(1, 4, 4)
    left[:, :, :2] = 1
    assert pointing_game(grad_cam(model, x, 0, layer=model[1]), left).item()
    assert pointing_game(grad_cam(model, x, 1, layer=model[1]), 1 - left).item()
    assert max_min_class_correlation(grad_cam, model, x, layer=model[1], relu=False).item() < 0
