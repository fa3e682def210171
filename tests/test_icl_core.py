"""labkit.icl: prompts, linear self-attention, the one-step GD reading and the reference predictors.

Oracles: closed forms written out by hand, torch.linalg.lstsq, the ridge normal equations, an empirical
least-squares fit of the best preconditioner, and weights set by hand to the GD construction."""

import pytest
import torch

from labkit.icl import (
    GDMatch,
    LinearSelfAttention,
    Prompts,
    anisotropic_cov,
    gd_attention,
    gd_equivalence,
    implied_preconditioner,
    matrix_cosine,
    mse,
    off_identity_share,
    ols_predict,
    one_step_gd_predict,
    optimal_preconditioner,
    regression_prompts,
    ridge_predict,
    tokens,
    train_icl,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_prompt_shapes_and_labels():
    p = regression_prompts(7, d=3, n_ctx=5, generator=gen())
    assert [tuple(t.shape) for t in p] == [(7, 5, 3), (7, 5), (7, 3), (7,), (7, 3)]
    torch.testing.assert_close(p.y_ctx, torch.einsum("nkd,nd->nk", p.x_ctx, p.w))
    torch.testing.assert_close(p.y_query, (p.x_query * p.w).sum(-1))
    t = regression_prompts(7, d=3, n_ctx=5, task="tanh", generator=gen())
    torch.testing.assert_close(t.y_ctx, torch.tanh(torch.einsum("nkd,nd->nk", t.x_ctx, t.w)))
    z = tokens(p)
    assert z.shape == (7, 6, 4) and torch.equal(z[:, -1, -1], torch.zeros(7))
    assert p.n == 7 and p.n_ctx == 5 and p.d == 3


def test_prompts_follow_the_generator():
    a = regression_prompts(4, d=2, n_ctx=3, generator=gen(1))
    b = regression_prompts(4, d=2, n_ctx=3, generator=gen(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_empirical_covariance_matches_cov_and_noise_level():
    cov = anisotropic_cov(3, condition=9.0, generator=gen(2))
    p = regression_prompts(20000, d=3, n_ctx=4, cov=cov, noise=0.5, generator=gen(3))
    x = p.x_ctx.reshape(-1, 3).double()
    torch.testing.assert_close(x.T @ x / x.shape[0], cov.double(), atol=0.03, rtol=0.02)
    resid = p.y_ctx - torch.einsum("nkd,nd->nk", p.x_ctx, p.w)
    assert abs(resid.std().item() - 0.5) < 0.01
    w = p.w.double()
    torch.testing.assert_close(w.T @ w / w.shape[0], torch.eye(3, dtype=torch.float64), atol=0.04, rtol=0)


def test_anisotropic_cov_spectrum():
    cov = anisotropic_cov(4, condition=16.0, generator=gen())
    eig = torch.linalg.eigvalsh(cov.double())
    assert abs(eig.sum().item() - 4) < 1e-5 and abs((eig.max() / eig.min()).item() - 16) < 1e-3
    torch.testing.assert_close(anisotropic_cov(3, condition=1.0), torch.eye(3))


def test_one_step_gd_against_the_closed_form_by_hand():
    p = regression_prompts(5, d=3, n_ctx=4, noise=0.1, generator=gen())
    gamma = torch.tensor([[1.0, 0.2, 0.0], [0.1, 0.5, 0.0], [0.0, 0.3, 2.0]])
    expected, expected_eta = [], []
    for k in range(5):
        grad0 = sum(-p.y_ctx[k, i] * p.x_ctx[k, i] for i in range(4)) / 4  # ∇L(0) of (1/2n)Σ(y − wᵀx)²
        expected.append(float(p.x_query[k] @ (-(gamma @ grad0))))
        expected_eta.append(float(p.x_query[k] @ (-0.3 * grad0)))
    torch.testing.assert_close(one_step_gd_predict(p, precond=gamma), torch.tensor(expected))
    torch.testing.assert_close(one_step_gd_predict(p, eta=0.3), torch.tensor(expected_eta))
    torch.testing.assert_close(one_step_gd_predict(p), one_step_gd_predict(p, eta=1.0))


def test_ols_against_lstsq_and_ridge_against_normal_equations():
    p = regression_prompts(6, d=3, n_ctx=8, noise=0.3, generator=gen(4))
    w = torch.linalg.lstsq(p.x_ctx.double(), p.y_ctx.double().unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(ols_predict(p), (p.x_query.double() * w).sum(-1).float())
    for k in range(6):
        x, y = p.x_ctx[k].double(), p.y_ctx[k].double()
        wr = torch.linalg.inv(x.T @ x + 0.7 * torch.eye(3, dtype=torch.float64)) @ x.T @ y
        torch.testing.assert_close(ridge_predict(p, lam=0.7)[k], (p.x_query[k].double() @ wr).float())
    torch.testing.assert_close(ridge_predict(p, lam=0.0), ols_predict(p))
    # noise-free, enough context: least squares recovers the query label exactly
    q = regression_prompts(3, d=3, n_ctx=6, generator=gen(5))
    torch.testing.assert_close(ols_predict(q), q.y_query, atol=1e-4, rtol=1e-4)


def test_ols_is_minimum_norm_with_short_context():
    p = regression_prompts(2, d=4, n_ctx=2, generator=gen(6))
    w = torch.linalg.pinv(p.x_ctx.double()) @ p.y_ctx.double().unsqueeze(-1)
    torch.testing.assert_close(ols_predict(p), (p.x_query.double() * w.squeeze(-1)).sum(-1).float())


@pytest.mark.parametrize("merged", [True, False])
def test_attention_with_gd_weights_is_one_gd_step(merged):
    p = regression_prompts(64, d=4, n_ctx=10, cov=anisotropic_cov(4, condition=5.0), generator=gen(7))
    gamma = torch.randn(4, 4, generator=gen(8))
    model = gd_attention(4, precond=gamma, merged=merged)
    with torch.no_grad():
        torch.testing.assert_close(model(p), one_step_gd_predict(p, precond=gamma), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(p.x_ctx, p.y_ctx, p.x_query), model(p))
        torch.testing.assert_close(gd_attention(4, eta=0.4, merged=merged)(p), one_step_gd_predict(p, eta=0.4))


def test_gd_equivalence_recovers_a_planted_preconditioner():
    gamma = torch.tensor([[0.8, 0.1, 0.0], [0.1, 0.5, -0.2], [0.0, -0.2, 1.2]])
    w_kq = torch.zeros(4, 4)
    w_kq[:3, :3] = 2.0 * gamma.T
    w_kq[:, 3] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # acts on the query's label slot, which is 0: no effect
    w_pv = torch.randn(4, 4, generator=gen(9))
    w_pv[-1] = torch.tensor([0.0, 0.0, 0.0, 0.5])
    model = LinearSelfAttention(3, merged=False, generator=gen(10))
    model.set_merged(w_kq, w_pv)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = regression_prompts(256, d=3, n_ctx=12, generator=gen(11))
    match = gd_equivalence(model, p)
    assert isinstance(match, GDMatch)
    torch.testing.assert_close(match.precond, gamma)
    assert abs(match.eta - float(torch.trace(gamma)) / 3) < 1e-6
    assert match.cosine > 1 - 1e-6 and match.relative_error < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a value row that reads the inputs as well as the labels is no longer a GD step
    w_pv[-1, 0] = 1.0
    model.set_merged(w_kq, w_pv)
    assert gd_equivalence(model, p).relative_error > 0.1


def test_optimal_preconditioner_closed_form_and_empirical_fit():
    torch.testing.assert_close(optimal_preconditioner(5, n_ctx=20), 20 / 26 * torch.eye(5))
    torch.testing.assert_close(optimal_preconditioner(5, n_ctx=20, noise=1.0), 20 / 27 * torch.eye(5))
    cov = anisotropic_cov(2, condition=4.0, generator=gen(12))
    star = optimal_preconditioner(2, n_ctx=5, cov=cov, noise=0.5)
    # the prediction is linear in Γ: fit Γ by least squares over many prompts
    p = regression_prompts(200000, d=2, n_ctx=5, cov=cov, noise=0.5, generator=gen(13))
    h = torch.einsum("nk,nkd->nd", p.y_ctx, p.x_ctx).double() / 5
    feats = torch.einsum("na,nb->nab", p.x_query.double(), h).reshape(-1, 4)
    fitted = torch.linalg.lstsq(feats, p.y_query.double().unsqueeze(-1)).solution.reshape(2, 2)
    torch.testing.assert_close(fitted, star.double(), atol=0.03, rtol=0.03)
    # the paper's non-isotropic setting, w ~ N(0, Σ⁻¹): exactly a multiple of Σ⁻¹
    torch.testing.assert_close(optimal_preconditioner(2, n_ctx=5, cov=cov, w_cov=torch.linalg.inv(cov), noise=0.5),
                               5 / (5 + 2 + 1 + 0.25) * torch.linalg.inv(cov), atol=1e-5, rtol=1e-5)
    w_cov = anisotropic_cov(2, condition=3.0, generator=gen(16))
    star = optimal_preconditioner(2, n_ctx=5, cov=cov, w_cov=w_cov)
    p = regression_prompts(200000, d=2, n_ctx=5, cov=cov, w_cov=w_cov, generator=gen(17))
    h = torch.einsum("nk,nkd->nd", p.y_ctx, p.x_ctx).double() / 5
    feats = torch.einsum("na,nb->nab", p.x_query.double(), h).reshape(-1, 4)
    fitted = torch.linalg.lstsq(feats, p.y_query.double().unsqueeze(-1)).solution.reshape(2, 2)
    torch.testing.assert_close(fitted, star.double(), atol=0.03, rtol=0.03)
    w = p.w.double()
    torch.testing.assert_close(w.T @ w / w.shape[0], w_cov.double(), atol=0.02, rtol=0.02)
    # as n grows it tends to Σ⁻¹
    far = optimal_preconditioner(2, n_ctx=100000, cov=cov)
    torch.testing.assert_close(far, torch.linalg.inv(cov), atol=1e-3, rtol=1e-3)


def test_matrix_helpers():
    assert abs(matrix_cosine(torch.eye(3), 2 * torch.eye(3)) - 1) < 1e-12
    assert off_identity_share(3 * torch.eye(4)) < 1e-12
    assert off_identity_share(torch.diag(torch.tensor([1.0, -1.0]))) == pytest.approx(1.0)


def test_training_reaches_the_one_step_gd_optimum():
    torch.manual_seed(0)
    model = LinearSelfAttention(3, merged=True)
    test = regression_prompts(4096, d=3, n_ctx=10, generator=gen(14))
    hist = train_icl(model, steps=300, batch=128, d=3, n_ctx=10, lr=0.02, generator=gen(15), progress=False,
                     metrics={"test_mse": lambda m: mse(m(test), test)}, eval_every=100)
    assert hist["test_mse"][-1] < 0.7 * hist["test_mse"][0]
    match = gd_equivalence(model, test)
    assert match.cosine > 0.98
    assert matrix_cosine(match.precond, torch.eye(3)) > 0.97
    assert abs(match.eta - 10 / 14) < 0.15
    assert implied_preconditioner(model).shape == (3, 3)


def test_bad_input():
    p = regression_prompts(3, d=2, n_ctx=4, generator=gen())
    with pytest.raises(ValueError, match="n_ctx"):
        regression_prompts(3, d=2, n_ctx=0)
    with pytest.raises(ValueError, match="task"):
        regression_prompts(3, d=2, n_ctx=2, task="cubic")
    with pytest.raises(ValueError, match="noise"):
        regression_prompts(3, d=2, n_ctx=2, noise=-1.0)
    with pytest.raises(ValueError, match="cov"):
        regression_prompts(3, d=2, n_ctx=2, cov=torch.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        regression_prompts(3, d=2, n_ctx=2, cov=torch.diag(torch.tensor([1.0, -1.0])))
    with pytest.raises(TypeError, match="generator"):
        regression_prompts(3, d=2, n_ctx=2, generator=0)
    with pytest.raises(ValueError, match="not both"):
        one_step_gd_predict(p, eta=1.0, precond=torch.eye(2))
    with pytest.raises(ValueError, match="precond"):
        one_step_gd_predict(p, precond=torch.eye(3))
    with pytest.raises(ValueError, match="lam"):
        ridge_predict(p, lam=-1.0)
    with pytest.raises(TypeError, match="Prompts"):
        ols_predict((p.x_ctx, p.y_ctx))
    bad = Prompts(p.x_ctx, p.y_ctx, p.x_query, p.y_query * float("nan"), p.w)
    with pytest.raises(ValueError, match="non-finite"):
        ols_predict(bad)
    with pytest.raises(ValueError, match="d="):
        train_icl(LinearSelfAttention(2), steps=1, batch=2, d=3, n_ctx=2)
    with pytest.raises(ValueError, match="optimizer"):
        train_icl(LinearSelfAttention(2), steps=1, batch=2, d=2, n_ctx=2, optimizer="lbfgs")
    with pytest.raises(TypeError, match="LinearSelfAttention"):
        gd_equivalence(torch.nn.Linear(2, 1), p)
    with pytest.raises(ValueError, match="d"):
        LinearSelfAttention(0)


def test_step_size_and_fitted_preconditioner():
    from labkit.icl import fit_preconditioner, fit_step_size, optimal_step_size

    assert optimal_step_size(5, n_ctx=20, noise=0.5) == pytest.approx(20 / 26.25)
    cov = anisotropic_cov(3, condition=6.0, generator=gen(18))
    p = regression_prompts(100000, d=3, n_ctx=6, cov=cov, noise=0.3, generator=gen(19))
    assert fit_step_size(p) == pytest.approx(optimal_step_size(3, n_ctx=6, cov=cov, noise=0.3), rel=0.03)
    torch.testing.assert_close(fit_preconditioner(p), optimal_preconditioner(3, n_ctx=6, cov=cov, noise=0.3),
                               atol=0.03, rtol=0.03)
    with pytest.raises(ValueError, match="prompts"):
        fit_preconditioner(regression_prompts(4, d=3, n_ctx=2, generator=gen()))


def test_one_step_gd_experiment_and_cosine_schedule():
    from labkit.icl import one_step_gd_experiment

    res = one_step_gd_experiment(d=2, n_ctx=8, noise=0.1, steps=150, batch=128, lr=0.05, init_scale=0.3, n_test=2048,
                                 init_generator=gen(20), generator=gen(21), progress=False)
    assert len(res.history.loss) == 150 and res.optimum.shape == (2, 2)
    assert res.cosine_to_optimum > 0.98 and res.precond_error < 0.15
    assert res.errors["trained attention"] < 1.05 * res.errors["one GD step, best Γ"]
    assert res.errors["least squares"] < res.errors["trained attention"]
    with pytest.raises(ValueError, match="schedule"):
        train_icl(LinearSelfAttention(2), steps=1, batch=2, d=2, n_ctx=2, schedule="step")
