"""labkit.dynamics.surgery: PCGrad and Bloop against their formulas, the fit closure, side effects, bad input."""

import copy

import pytest
import torch
from torch import nn

from labkit.dynamics.surgery import (
    SurgeryLoss,
    bloop_direction,
    compare_surgery,
    pcgrad,
    project_out,
    surgery_problem,
    train_two_losses,
)


def test_pcgrad_two_conflicting_vectors_matches_projection_formula():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-2.0, 1.0, 0.5])
    assert (g1 @ g2) < 0
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    torch.testing.assert_close(pcgrad([g1, g2]), expected)
    torch.testing.assert_close(pcgrad(torch.stack([g1, g2]), generator=torch.Generator().manual_seed(3)), expected)
    # each projected gradient is orthogonal to the other original gradient
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    assert abs(float(p1 @ g2)) < 1e-6


def test_pcgrad_without_conflict_is_the_sum():
    g = torch.tensor([[1.0, 2.0], [0.5, 0.1], [3.0, -0.2]])
    assert (g @ g.T >= 0).all()
    torch.testing.assert_close(pcgrad(g), g.sum(0))


def test_pcgrad_three_gradients_follows_algorithm_1_in_index_order():
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [0.0, -1.0]])
    out = torch.zeros(2)
    for i in range(3):
        v = g[i].clone()
        for j in range(3):
            if j != i and v @ g[j] < 0:
                v = v - (v @ g[j]) / (g[j] @ g[j]) * g[j]
        out += v
    torch.testing.assert_close(pcgrad(g), out)


def test_pcgrad_against_torchjd():
    torchjd = pytest.importorskip("torchjd")
    from torchjd.aggregation import PCGrad
    g = torch.randn(2, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g[1] = -g[0] + 0.3 * g[1]
    assert torchjd is not None
    torch.testing.assert_close(pcgrad(g), PCGrad()(g))


def test_bloop_with_beta_zero_is_the_plain_projection():
    gen = torch.Generator().manual_seed(1)
    g_main, g_aux, old = (torch.randn(7, generator=gen) for _ in range(3))
    step = bloop_direction(g_main, g_aux, old, lam=0.3, beta=0.0)
    expected = g_main + 0.3 * (g_aux - (g_aux @ g_main) / (g_main @ g_main) * g_main)
    torch.testing.assert_close(step.direction, expected)
    torch.testing.assert_close(step.ema, g_main)
    # the auxiliary part is orthogonal to the main gradient
    assert abs(float((step.direction - g_main) @ g_main)) < 1e-5


def test_bloop_ema_update_and_orthogonality_to_the_ema():
    gen = torch.Generator().manual_seed(2)
    g_main, g_aux, old = (torch.randn(5, generator=gen) for _ in range(3))
    direction, ema = bloop_direction(g_main, g_aux, old, lam=2.0, beta=0.9)
    torch.testing.assert_close(ema, 0.9 * old + 0.1 * g_main)
    assert abs(float((direction - g_main) @ ema)) < 1e-5
    first = bloop_direction(g_main, g_aux, None, lam=1.0, beta=0.9)
    torch.testing.assert_close(first.ema, g_main)
    torch.testing.assert_close(project_out(g_aux, torch.zeros(5)), g_aux)


def test_surgery_loss_gradient_is_the_direction_and_value_the_main_loss():
    problem = surgery_problem(4, 6, generator=torch.Generator().manual_seed(0))
    main_loss, aux_loss = problem.losses()
    model = nn.Linear(6, 1, bias=False)
    batch = (problem.X, problem.y)
    for method in ("sum", "pcgrad", "project", "bloop"):
        blend = SurgeryLoss(main_loss, aux_loss, method=method, lam=0.5, beta=0.5)
        model.zero_grad()
        value = blend(model, batch)
        value.backward()
        w = model.weight.detach().reshape(-1)
        g_main = problem.X.T @ (problem.X @ w - problem.y) / 4
        g_aux = w - problem.target
        expected = {"sum": g_main + 0.5 * g_aux, "pcgrad": pcgrad([g_main, 0.5 * g_aux]),
                    "project": g_main + 0.5 * project_out(g_aux, g_main),
                    "bloop": g_main + 0.5 * project_out(g_aux, g_main)}[method]  # first step: EMA = g_main
        torch.testing.assert_close(model.weight.grad.reshape(-1), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(value.detach(), main_loss(model, batch).detach())


def test_bilevel_solution_interpolates_and_is_closest_to_target():
    problem = surgery_problem(5, 12, generator=torch.Generator().manual_seed(4))
    w = problem.bilevel_solution()
    torch.testing.assert_close(problem.X @ w, problem.y, atol=1e-4, rtol=1e-4)
    null = torch.linalg.svd(problem.X, full_matrices=True).Vh[5:]
    assert float((null @ (w - problem.target)).abs().max()) < 1e-4  # w - target lies in the row space


def test_train_two_losses_leaves_model_and_bloop_approaches_the_bilevel_solution():
    problem = surgery_problem(8, 16, noise=0.3, generator=torch.Generator().manual_seed(0))
    main_loss, aux_loss = problem.losses()
    model = nn.Linear(16, 1, bias=False)
    nn.init.zeros_(model.weight)
    before = copy.deepcopy(model.state_dict())
    runs = {method: train_two_losses(model, main_loss, aux_loss, (problem.X, problem.y), method=method, lam=0.05,
                                     beta=0.99, lr=0.5, steps=300, batch_size=2, eval_every=100, progress=False)
            for method in ("bloop", "sum")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.weight.grad is None
    (main, aux), (main_sum, _) = (problem.values(runs[m].model.weight.detach().reshape(-1)) for m in ("bloop", "sum"))
    ideal = problem.values(problem.bilevel_solution())[1]
    assert main < main_sum / 5 and abs(aux - ideal) < 0.05 * ideal
    assert runs["bloop"].history.steps == [0, 100, 200, 300] and "aux loss" in runs["bloop"].history.rows[-1]


def test_compare_surgery_collects_every_run():
    problem = surgery_problem(4, 8, generator=torch.Generator().manual_seed(1))
    c = compare_surgery(problem, methods=["sum", "bloop"], lams=[0.1], lr=0.2, steps=5, batch_size=2,
                        progress=False)
    assert set(c.main) == {("sum", 0.1), ("bloop", 0.1)}
    assert c.best_aux("sum", tol=-1.0) == float("inf")


@pytest.mark.parametrize("call, error", [
    (lambda: pcgrad([]), TypeError),
    (lambda: pcgrad(torch.zeros(3)), ValueError),
    (lambda: pcgrad([torch.zeros(2), torch.zeros(3)]), ValueError),
    (lambda: pcgrad(torch.tensor([[float("nan"), 1.0]])), ValueError),
    (lambda: pcgrad(torch.ones(2, 2), generator=0), TypeError),
    (lambda: bloop_direction(torch.ones(2), torch.ones(3), None, lam=1.0, beta=0.5), ValueError),
    (lambda: bloop_direction(torch.ones(2), torch.ones(2), None, lam=-1.0, beta=0.5), ValueError),
    (lambda: bloop_direction(torch.ones(2), torch.ones(2), None, lam=1.0, beta=1.0), ValueError),
    (lambda: bloop_direction(torch.ones(2), torch.ones(2), torch.ones(3), lam=1.0, beta=0.5), ValueError),
    (lambda: bloop_direction([1.0], torch.ones(1), None, lam=1.0, beta=0.5), TypeError),
    (lambda: SurgeryLoss(lambda m, b: 0, lambda m, b: 0, method="mgda"), ValueError),
    (lambda: surgery_problem(10, 5), ValueError),
])
def test_bad_input(call, error):
    with pytest.raises(error):
        call()
