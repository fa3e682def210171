"""Progress measures (grok_step, Fourier, NLM cosine, norms) and a checkpoint-resumed grokking run."""

import math

import pytest
import torch
from torch import nn

from labkit.grokking import (
    feature_purity,
    fourier_concentration,
    fourier_power,
    frequency_coverage,
    grok_step,
    key_frequencies,
    make_optimizer,
    nlm_cosine,
    node_frequencies,
    node_spectra,
    parameter_drift,
    progress_lead,
    snapshot,
    train_grokking,
    weight_norm,
)
from labkit.grokking.models import OneHotMLP, OneLayerTransformer
from labkit.grokking.modular import modular_arithmetic
from labkit.training import History


def test_grok_step_on_a_crafted_history():
    h = History()
    rows = [(0, 0.0, 0.0), (100, 0.5, 0.0), (200, 0.995, 0.02), (300, 1.0, 0.5), (1000, 1.0, 0.96)]
    for step, tr, te in rows:
        h.record(step, {"train_acc": tr, "test_acc": te})
    s = grok_step(h)
    assert (s.memorize_step, s.generalize_step, s.delay_ratio) == (200, 1000, 5.0)
    assert s.grokked and s.memorized and "delay ratio 5.0x" in str(s)
    never = grok_step({"step": [0, 10], "train_acc": [0.1, 1.0], "test_acc": [0.0, 0.2]})
    assert never.memorize_step == 10 and never.generalize_step is None and never.delay_ratio is None
    with pytest.raises(ValueError, match="test_threshold"):
        grok_step(h, test_threshold=1.5)


@pytest.mark.parametrize("p", [11, 12])
def test_fourier_power_obeys_parseval(p):
    e = torch.randn(2, p, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(p))
    power = fourier_power(e)
    assert power.shape == (p // 2 + 1,)
    assert power.sum().item() == pytest.approx(e.pow(2).sum().item(), rel=1e-10)


def test_pure_frequency_embedding_is_fully_concentrated():
    p, k = 17, 3
    a = torch.arange(p, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    angle = 2 * math.pi * k * a / p
    e = torch.cos(angle)[:, None] * u + torch.sin(angle)[:, None] * v + 2.0
    assert key_frequencies(e, top_k=1) == [k]
    assert fourier_concentration(e, top_k=1) == pytest.approx(1.0, abs=1e-12)  # the constant is excluded
    random = torch.randn(p, 8, generator=gen, dtype=torch.float64)
    assert fourier_concentration(random, top_k=1) < 0.6
    with pytest.raises(ValueError, match="top_k"):
        fourier_concentration(e, top_k=9)


def test_nlm_cosine_closed_form_and_grad_untouched():
    # one example, loss softplus(-w.x): -grad = sigmoid(-w.x) x, so cos(-grad, w) = cos(x, w)
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, -0.5]]))
    x = torch.tensor([[0.3, -1.0, 2.0]])
    cos = nlm_cosine(model, lambda m: nn.functional.softplus(-m(x)).sum())
    w = model.weight.detach().reshape(-1)
    assert cos == pytest.approx((torch.dot(w, x[0]) / (w.norm() * x.norm())).item(), rel=1e-6)
    assert model.weight.grad is None
    with pytest.raises(ValueError, match="not a parameter of model"):
        nlm_cosine(model, lambda m: m(x).sum(), params=[nn.Linear(3, 1).weight])


def test_weight_norm_and_parameter_drift():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, 4.0]))
    assert weight_norm(model) == pytest.approx(5.0)
    ref = snapshot(model)
    with torch.no_grad():
        model.weight.mul_(2)
    assert parameter_drift(model, ref, names=["weight"]) == pytest.approx(1.0)
    assert parameter_drift(model, ref) == pytest.approx(3.0 / 5.0)
    with pytest.raises(ValueError, match="unknown"):
        parameter_drift(model, ref, names=["nope"])


def short_run(tmp_path, steps, model_cls=OneHotMLP, optimizer="perp_adamw", checkpoint=True):
    torch.manual_seed(0)
    data = modular_arithmetic(11, train_fraction=0.5, seed=0)
    if model_cls is OneHotMLP:
        model = OneHotMLP(11, hidden=(16, 16))
    else:
        model = model_cls(11, d_model=8, n_heads=2, d_mlp=16)
    opt = make_optimizer(model, optimizer, lr=1e-2, weight_decay=0.5)
    return train_grokking(model, data, optimizer=opt, steps=steps, eval_every=5, loss="stablemax",
                          measures=("acc", "loss", "weight_norm", "collapse", "nlm_cosine", "fourier"),
                          spectrum=True, checkpoint=tmp_path / "run.pt" if checkpoint else None,
                          progress=False)


@pytest.mark.parametrize("optimizer", ["perp_adamw", "grokfast_adamw", "adamw"])
def test_checkpoint_resume_gives_the_same_curve(tmp_path, optimizer):
    full = short_run(tmp_path / "a", 30, optimizer=optimizer)
    short_run(tmp_path / "b", 15, optimizer=optimizer)  # interrupted half-way (checkpoint at step 15)
    resumed = short_run(tmp_path / "b", 30, optimizer=optimizer)  # a fresh process would do the same
    assert resumed.history.steps == full.history.steps == list(range(0, 31, 5))
    assert resumed.history.rows == full.history.rows
    assert resumed.history.loss == full.history.loss
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert resumed.spectra().shape == (7, 6)


def test_train_grokking_records_every_measure_and_fits_a_tiny_table(tmp_path):
    run = short_run(tmp_path, 40, optimizer="adamw", checkpoint=False)
    row = run.history.rows[-1]
    for col in ("train_acc", "test_acc", "train_loss", "test_loss", "weight_norm", "softmax_collapse",
                "nlm_cosine", "fourier_conc", "freq_0", "freq_5"):
        assert col in row
    assert run.history["train_acc"][-1] > run.history["train_acc"][0]
    assert run.summary.memorize_step is None or run.summary.memorize_step <= 40
    spectra = run.spectra()
    model_power = fourier_power(run.model.operand_embeddings())
    torch.testing.assert_close(spectra[-1], model_power.to(spectra.dtype), rtol=1e-5, atol=1e-6)


def test_train_grokking_with_the_transformer_and_bad_arguments(tmp_path):
    run = short_run(tmp_path, 5, model_cls=OneLayerTransformer, optimizer="adamw", checkpoint=False)
    assert len(run.history) == 2
    data = modular_arithmetic(7)
    with pytest.raises(ValueError, match="measures"):
        train_grokking(nn.Linear(2, 7), data, optimizer=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1),
                       steps=1, measures=("accuracy",))
    with pytest.raises(ValueError, match="operand_embeddings"):
        train_grokking(nn.Linear(2, 7), data, optimizer=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1),
                       steps=1, measures=("fourier",))
    with pytest.raises(ValueError, match="optimizer name"):
        make_optimizer(nn.Linear(1, 1), "lion")


def test_feature_purity_and_node_frequencies_on_pure_nodes():
    p = 13
    a = torch.arange(p, dtype=torch.float64)
    freqs = torch.tensor([1, 4, 6, 4])
    phases = torch.tensor([0.0, 1.0, 2.0, 0.5], dtype=torch.float64)
    e = torch.cos(2 * math.pi * freqs[None, :] * a[:, None] / p + phases[None, :]) + 0.3  # (p, 4 nodes)
    assert node_frequencies(e).tolist() == [1, 4, 6, 4]
    assert feature_purity(e) == pytest.approx(1.0, abs=1e-12)
    assert node_spectra(torch.stack([e, e])).shape == (4, p // 2)
    noisy = torch.randn(p, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert 0.2 < feature_purity(noisy) < 0.6


def test_frequency_coverage_counts_single_frequency_nodes():
    p = 13
    a = torch.arange(p, dtype=torch.float64)
    freqs = torch.tensor([1, 4, 6, 4])
    pure = torch.cos(2 * math.pi * freqs[None, :] * a[:, None] / p)  # four single-frequency nodes
    mixed = torch.cos(2 * math.pi * a / p) + 0.5 * torch.cos(2 * math.pi * 3 * a / p)  # 0.8 of its power at 1
    e = torch.cat([pure, mixed[:, None], torch.zeros(p, 1, dtype=torch.float64)], dim=1)  # + a dead node
    assert frequency_coverage(e).tolist() == [2, 0, 0, 2, 0, 1]
    assert frequency_coverage(e, purity=0.9).tolist() == [1, 0, 0, 2, 0, 1]
    assert frequency_coverage(torch.stack([e, e])).tolist() == [2, 0, 0, 2, 0, 1]
    for bad in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="purity"):
            frequency_coverage(e, purity=bad)


def test_progress_lead_on_a_crafted_history():
    h = {"step": [0, 10, 20, 30], "test_acc": [0.0, 0.05, 0.5, 1.0], "conc": [0.2, 0.5, 0.8, 1.0]}
    # last evaluation with test < 0.1 is step 10: (0.5 - 0.2) / (1.0 - 0.2)
    assert progress_lead(h, "conc") == pytest.approx(0.375)
    assert progress_lead(h, "conc", below=0.6) == pytest.approx(0.75)
    assert math.isnan(progress_lead({**h, "conc": [1.0] * 4}, "conc"))
    with pytest.raises(ValueError, match="never below"):
        progress_lead({**h, "test_acc": [0.5] * 4}, "conc")
