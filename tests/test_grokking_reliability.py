"""The grokking cases of issue 12, each now a clear error naming the argument, and the checks behind them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from labkit.grokking import (
    GrokfastEMA,
    OneHotMLP,
    OneLayerTransformer,
    PerpGrad,
    TwoLayerReLU,
    fourier_concentration,
    key_frequencies,
    make_optimizer,
    modular_arithmetic,
    modular_run,
    node_frequencies,
    parameter_drift,
    snapshot,
    softmax_collapse_fraction,
    stablemax_cross_entropy,
    train_grokking,
    train_xor,
    xor_clusters,
)

NAN, INF = math.nan, math.inf


def test_one_hot_mlp_refuses_an_operand_outside_the_residues():
    model = OneHotMLP(5, hidden=(8,))
    with pytest.raises(ValueError, match=r"x must hold operands in \[0, 5\).*\[1, 7\]"):
        model(torch.tensor([[7, 1]]))  # 7 used to be read from the b-table: finite, wrong logits
    with pytest.raises(ValueError, match="x must hold operands"):
        model(torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match="x must hold operands"):
        model.hidden_features(torch.tensor([[0, 5]]))
    assert model(torch.tensor([[4, 0]])).shape == (1, 5)
    assert model(torch.zeros(0, 2, dtype=torch.long)).shape == (0, 5)  # an empty batch is still a batch


def test_transformer_refuses_an_operand_outside_the_residues():
    model = OneLayerTransformer(5, d_model=8, n_heads=2, d_mlp=8)
    for bad in ([[5, 1]], [[1, 6]], [[-1, 0]]):  # 5 is the "=" token: it used to be read as one silently
        with pytest.raises(ValueError, match="x must hold operands in"):
            model(torch.tensor(bad))
        with pytest.raises(ValueError, match="x must hold operands in"):
            model.forward_full(torch.tensor(bad))
    with pytest.raises(ValueError, match="meta"):
        model(torch.zeros(2, 2, dtype=torch.long, device="meta"))


def test_data_of_another_p_is_refused():
    small, large = modular_arithmetic(5), modular_arithmetic(7)
    model = OneHotMLP(5, hidden=(8,))
    with pytest.raises(ValueError, match=r"data.train_x must hold operands in \[0, 5\)"):
        modular_run(dataclasses.replace(large, p=5), seed=0, steps=1, progress=False)
    with pytest.raises(ValueError, match="data was made with p=7 but the model reads residues mod p=5"):
        train_grokking(model, large, optimizer=make_optimizer(model), steps=1, progress=False)
    with pytest.raises(ValueError, match="data was made with p=5 but the model reads residues mod p=7"):
        wide = OneHotMLP(7, hidden=(8,))
        train_grokking(wide, small, optimizer=make_optimizer(wide), steps=1, progress=False)
    bad_labels = dataclasses.replace(small, train_y=small.train_y + 5)
    with pytest.raises(ValueError, match=r"data.train_y must hold class indices in \[0, 5\)"):
        modular_run(bad_labels, seed=0, steps=1, progress=False)


@pytest.mark.parametrize("cls", [GrokfastEMA, PerpGrad])
@pytest.mark.parametrize("option, value", [
    ("lr", NAN), ("lr", INF), ("lr", -1.0), ("weight_decay", NAN), ("weight_decay", INF), ("eps", NAN),
    ("betas", (NAN, 0.98)), ("betas", (0.9, 1.0)), ("lr", "0.1"),
])
def test_optimizer_hyper_parameters_are_checked(cls, option, value):
    model = nn.Linear(2, 2)
    with pytest.raises((ValueError, TypeError), match=option):
        cls(model.parameters(), torch.optim.AdamW, **{option: value})


@pytest.mark.parametrize("option, value", [
    ("ema_lamb", NAN), ("ema_lamb", INF), ("ema_lamb", -1.0), ("ema_alpha", NAN), ("ema_alpha", 1.0),
    ("ema_lamb", "2"),
])
def test_grokfast_ema_options_are_checked(option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        GrokfastEMA(nn.Linear(2, 2).parameters(), **{option: value})
    with pytest.raises((ValueError, TypeError), match=option):
        make_optimizer(nn.Linear(2, 2), "grokfast_adamw", **{option: value})


def test_param_groups_are_checked_in_the_constructor_and_in_add_param_group():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"params\[0\].lr"):
        GrokfastEMA([{"params": a.parameters(), "lr": NAN}], lr=1e-3)
    opt = PerpGrad(a.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="param_group.lr"):
        opt.add_param_group({"params": b.parameters(), "lr": NAN})
    opt.add_param_group({"params": b.parameters(), "lr": 0.5})
    assert len(opt.param_groups) == len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]["lr"] == 0.5


@pytest.mark.parametrize("option, value", [("lr", NAN), ("lr", INF), ("weight_decay", NAN), ("momentum", NAN)])
def test_make_optimizer_checks_every_optimizer(option, value):
    for name in ("adamw", "sgd", "perp_sgd"):
        if option == "momentum" and name == "adamw":
            continue
        with pytest.raises(ValueError, match=option):
            make_optimizer(nn.Linear(2, 2), name, **{option: value})


def test_reductions_refuse_nan_instead_of_hiding_it():
    emb = torch.randn(2, 7, 4)
    emb[0, 3, 1] = NAN
    for fn in (fourier_concentration, key_frequencies, node_frequencies):
        with pytest.raises(ValueError, match="embedding contains NaN"):
            fn(emb)
    logits = torch.randn(4, 3)
    logits[1, 0] = NAN  # used to count as "not collapsed"
    with pytest.raises(ValueError, match="logits contains NaN"):
        softmax_collapse_fraction(logits, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must hold class indices"):
        softmax_collapse_fraction(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_losses_carry_nan_to_the_output_so_fit_sees_it():
    logits = torch.randn(4, 3)
    logits[2, 1] = NAN
    assert math.isnan(float(stablemax_cross_entropy(logits, torch.zeros(4, dtype=torch.long))))
    with pytest.raises(ValueError, match="logits is empty"):
        stablemax_cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_parameter_drift_refuses_a_snapshot_of_another_architecture():
    model = nn.Linear(3, 2)
    ref = snapshot(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"reference\['weight'\] has shape"):
        parameter_drift(model, ref)
    ref = snapshot(model)
    ref["bias"][0] = NAN
    with pytest.raises(ValueError, match=r"reference\['bias'\] contains NaN"):
        parameter_drift(model, ref)


@pytest.mark.parametrize("kwargs, match", [
    ({"signal": NAN}, "signal"), ({"signal": INF}, "signal"), ({"noise_rate": NAN}, "noise_rate"),
    ({"dim": 2.5}, "dim"), ({"seed": -1}, "seed"), ({"n_train": True}, "n_train"),
])
def test_xor_clusters_options(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        xor_clusters(8, 8, **{"dim": 4, **kwargs})


def test_two_layer_relu_and_train_xor_inputs():
    with pytest.raises(ValueError, match="init_scale"):
        TwoLayerReLU(4, 4, init_scale=NAN)
    model = TwoLayerReLU(4, 4)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        model(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have 4 features"):
        model(torch.zeros(3, 5))
    data = xor_clusters(8, 8, dim=5)
    with pytest.raises(ValueError, match="data.train_x has 5 features"):
        train_xor(model, data, steps=1, progress=False)
    data = xor_clusters(8, 8, dim=4)
    data.train_x[0, 0] = NAN
    with pytest.raises(ValueError, match="data.train_x contains NaN"):
        train_xor(model, data, steps=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_xor(model, xor_clusters(8, 8, dim=4), lr=NAN, steps=1, progress=False)


def test_a_diverged_run_still_stops_cleanly_with_the_nan_refusing_measures():
    data = modular_arithmetic(13, train_fraction=0.5)
    model = OneHotMLP(13, hidden=(8,))
    with torch.no_grad():
        model.bias[0] = INF  # a run that has diverged: the first loss is NaN, fit stops and evaluates once more
    opt = make_optimizer(model, "sgd", lr=0.1, weight_decay=0.0)
    run = train_grokking(model, data, optimizer=opt, steps=5, eval_every=1, progress=False,
                         measures=("acc", "loss", "collapse", "nlm_cosine", "fourier"), spectrum=True)
    last = run.history.rows[-1]
    assert not math.isfinite(run.history.loss[-1])
    assert math.isnan(last["fourier_conc"]) and math.isnan(last["softmax_collapse"])


@pytest.mark.parametrize("device", ["tpu", "meta", 3])
def test_data_and_models_check_the_device(device):
    from labkit.grokking import fresh_model

    for make in (lambda: modular_arithmetic(5, device=device), lambda: xor_clusters(8, 8, dim=3, device=device),
                 lambda: fresh_model(5, seed=0, device=device)):
        with pytest.raises((ValueError, TypeError), match="device"):
            make()


def test_a_huge_init_scale_is_refused_whatever_the_draws():
    """Found in CI: TwoLayerReLU(init_scale=1.67e38) overflowed float32 on some draws of the global RNG."""
    from labkit.grokking import TwoLayerReLU

    for seed in range(3):
        with pytest.raises(ValueError, match="init_scale"):
            TwoLayerReLU(4, 8, init_scale=1e39, generator=torch.Generator().manual_seed(seed))
