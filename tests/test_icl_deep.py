"""labkit.icl.deep and labkit.icl.flow: the deep linear transformer, its baselines and the gradient-flow theory."""

import math

import pytest
import torch

from labkit.icl import optimal_preconditioner, regression_prompts, tokens
from labkit.icl.deep import (
    LinearTransformer,
    NoisyPrompts,
    adaptive_ridge_predict,
    estimated_noise,
    gd_predict,
    noisy_prompts,
    noisy_ridge_predict,
    oracle_ridge_predict,
    train_linear_transformer,
    tune_gd_step,
    tune_ridge,
    warmup_cosine,
)
from labkit.icl.flow import paper_initialization, prediction_error


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_matrix_form_equals_the_token_by_token_layers():
    p = regression_prompts(16, d=3, n_ctx=7, noise=0.3, generator=gen())
    model = LinearTransformer(3, layers=3, init_scale=0.3, generator=gen(1))
    z = tokens(p)
    with torch.no_grad():
        for layer in range(3):
            ctx = z[:, :7]
            stats = ctx.transpose(1, 2) @ ctx / 7
            z = torch.stack([torch.stack([z[n, i] + model.P[layer] @ stats[n] @ model.Q[layer] @ z[n, i]
                                          for i in range(z.shape[1])]) for n in range(z.shape[0])])
        assert torch.allclose(model(p), z[:, -1, -1], rtol=1e-4, atol=1e-5)
        assert model(p, every_layer=True).shape == (3, 16)


def test_a_hand_set_layer_is_one_gd_step_and_many_small_steps_reach_least_squares():
    p = regression_prompts(20, d=4, n_ctx=12, generator=gen())
    layer = LinearTransformer(4, layers=1, init_scale=0.0)
    with torch.no_grad():
        layer.Q[0, :4, :4] = torch.eye(4)
        layer.P[0, -1, -1] = 0.7
        h = torch.einsum("nk,nkd->nd", p.y_ctx, p.x_ctx) / 12
        assert torch.allclose(layer(p), 0.7 * (h * p.x_query).sum(-1), rtol=1e-5, atol=1e-6)
    assert torch.allclose(gd_predict(p, steps=1, eta=0.7), 0.7 * (h * p.x_query).sum(-1), rtol=1e-5, atol=1e-6)
    w = torch.linalg.lstsq(p.x_ctx.double(), p.y_ctx.double().unsqueeze(-1)).solution.squeeze(-1)
    ols = (w * p.x_query.double()).sum(-1)
    assert torch.allclose(gd_predict(p, steps=3000, eta=0.3).double(), ols, rtol=1e-3, atol=1e-3)


def test_ridge_against_the_normal_equations_per_prompt_and_the_noise_estimate():
    data = noisy_prompts(10, d=3, n_ctx=9, sigma_max=1.0, generator=gen())
    p = data.prompts
    lam = torch.linspace(0.1, 2.0, 10)
    got = noisy_ridge_predict(p, lam=lam)
    for i in range(10):
        x, y = p.x_ctx[i].double(), p.y_ctx[i].double()
        w = torch.linalg.solve(x.T @ x + lam[i].double() * torch.eye(3, dtype=torch.float64), x.T @ y)
        assert abs(float(got[i]) - float(w @ p.x_query[i].double())) < 1e-5
        w_ls = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
        assert abs(float(estimated_noise(p)[i]) - float(((y - x @ w_ls) ** 2).sum() / 6)) < 1e-8
    assert torch.allclose(oracle_ridge_predict(data), noisy_ridge_predict(p, lam=data.sigma.double() ** 2))
    assert adaptive_ridge_predict(p).shape == (10,)


def test_noisy_prompts_noise_levels_and_categorical_levels():
    data = noisy_prompts(4000, d=2, n_ctx=50, sigma_max=2.0, generator=gen())
    assert isinstance(data, NoisyPrompts) and 0 <= float(data.sigma.min()) and float(data.sigma.max()) <= 2.0
    resid = data.prompts.y_ctx - torch.einsum("nkd,nd->nk", data.prompts.x_ctx, data.prompts.w)
    assert abs(float((resid.std(-1) / data.sigma.clamp_min(0.2))[data.sigma > 0.2].mean()) - 1) < 0.05
    cat = noisy_prompts(200, d=2, n_ctx=5, sigmas=[1.0, 3.0], generator=gen())
    assert set(cat.sigma.tolist()) == {1.0, 3.0}


def test_tuning_picks_the_grid_minimum_and_the_oracle_is_the_floor():
    data = noisy_prompts(3000, d=3, n_ctx=10, sigma_max=2.0, generator=gen())
    t = tune_ridge(data, lams=[0.01, 0.5, 1.0, 5.0])
    assert t.value == t.grid[t.errors.index(min(t.errors))]
    oracle = float(((oracle_ridge_predict(data).double() - data.clean.double()) ** 2).mean())
    assert oracle <= min(t.errors) * 1.005
    g = tune_gd_step(data, steps=2, etas=[0.1, 0.5, 0.9])
    assert g.value in (0.1, 0.5, 0.9)


def test_training_lowers_the_loss_and_matches_one_gd_step_for_one_layer():
    model = LinearTransformer(3, layers=1, generator=gen())
    h = train_linear_transformer(model, steps=300, batch=128, n_ctx=10, lr=3e-2, generator=gen(1), progress=False)
    assert h.loss[-1] < 0.5 * h.loss[0]
    # oracle: a trained layer is at best one preconditioned GD step, and Γ ∝ I is optimal for isotropic inputs
    data = noisy_prompts(4000, d=3, n_ctx=10, sigmas=[0.0], generator=gen(2))
    with torch.no_grad():
        lt = float(((model(data.prompts).double() - data.clean.double()) ** 2).mean())
    best = min(tune_gd_step(data, steps=1, etas=torch.linspace(0.2, 1.2, 51).tolist()).errors)
    assert 0.99 * best <= lt <= 1.05 * best


def test_warmup_cosine_ramps_up_then_anneals_to_zero():
    f = [warmup_cosine(s, steps=100, warmup=0.2) for s in range(101)]
    assert f[0] == pytest.approx(0.05 * 0.5 * (1 + math.cos(0.0)))          # (0 + 1) / 20 of the way up
    assert f[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 100)))  # ramp done: the plain cosine
    assert max(f) == f[19] and f[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[19:], f[20:], strict=False))         # non-increasing after the ramp
    assert warmup_cosine(5, steps=10, warmup=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, steps=10, warmup=1.0)


def test_paper_initialization_and_the_error_formula_against_monte_carlo():
    model = paper_initialization(4, sigma=0.2, generator=gen())
    w_kq, w_pv = model.merged_weights()
    assert abs(float(w_kq[:4, :4].detach().norm()) - 0.2) < 1e-6 and float(w_kq[4].detach().abs().sum()) == 0
    assert float(w_pv[4, 4]) == pytest.approx(0.2) and float(w_pv.abs().sum()) == pytest.approx(0.2)
    cov = torch.diag(torch.tensor([0.5, 1.0, 1.5, 1.0]))
    gamma = optimal_preconditioner(4, n_ctx=10, cov=cov)
    p = regression_prompts(200_000, d=4, n_ctx=10, cov=cov, generator=gen(2))
    h = torch.einsum("nk,nkd->nd", p.y_ctx, p.x_ctx) / 10
    mc = float(((torch.einsum("nd,de,ne->n", p.x_query, gamma, h) - p.y_query) ** 2).double().mean())
    assert mc == pytest.approx(prediction_error(gamma, n_ctx=10, cov=cov), rel=0.03)
    # Γ* minimises the error: a perturbation raises it
    assert prediction_error(gamma * 1.1, n_ctx=10, cov=cov) > prediction_error(gamma, n_ctx=10, cov=cov)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="layers"):
        LinearTransformer(3, layers=0)
    with pytest.raises(ValueError, match="d=2"):
        LinearTransformer(2)(regression_prompts(2, d=3, n_ctx=4))
    with pytest.raises(ValueError, match="exactly one"):
        noisy_prompts(2, d=2, n_ctx=3)
    with pytest.raises(ValueError, match="lam"):
        noisy_ridge_predict(regression_prompts(2, d=2, n_ctx=3), lam=-1.0)
    with pytest.raises(ValueError, match="more context points"):
        estimated_noise(regression_prompts(2, d=3, n_ctx=3))
    with pytest.raises(ValueError, match="optimizer"):
        train_linear_transformer(LinearTransformer(2), steps=1, batch=2, n_ctx=3, optimizer="lbfgs")
    with pytest.raises(ValueError, match="schedule"):
        train_linear_transformer(LinearTransformer(2), steps=1, batch=2, n_ctx=3, schedule="step")
    with pytest.raises(ValueError, match="betas"):
        train_linear_transformer(LinearTransformer(2), steps=1, batch=2, n_ctx=3, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="LinearTransformer"):
        train_linear_transformer(torch.nn.Linear(2, 1), steps=1, batch=2, n_ctx=3)
    with pytest.raises(ValueError, match="sigma"):
        paper_initialization(3, sigma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        prediction_error(torch.ones(2, 3), n_ctx=4)
