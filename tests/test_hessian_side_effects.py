"""Every measurement of the Hessian pillar leaves the caller's model as found: parameter values, ``.grad``,
``requires_grad``, every submodule's train/eval mode, buffers (BatchNorm running statistics) and hooks; and a
``HessianOperator`` stays right after its parameters were written in place (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from model_state import assert_same, snapshot
from torch import nn

from labkit.hessian import (
    GGNOperator,
    HessianOperator,
    alignment_penalties,
    exact_hessian,
    filter_normalized_direction,
    hutchinson_trace,
    interpolation_direction,
    loss_surface_1d,
    loss_surface_2d,
    random_direction,
    spectral_density,
    top_eigenvalues,
)
from labkit.hessian.experiments import sharpness


def awkward_model() -> tuple[nn.Sequential, list[int], tuple[torch.Tensor, torch.Tensor]]:
    """BatchNorm, Dropout, a frozen parameter, a forward hook, existing .grad, mixed train/eval modes."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, 3))
    model.double()
    model[0].bias.requires_grad_(False)  # frozen
    with torch.no_grad():  # running statistics away from their defaults
        model[1].running_mean.normal_(generator=g)
        model[1].running_var.uniform_(0.5, 2.0, generator=g)
    model.train()
    model[1].eval()  # mixed modes: BatchNorm in eval inside a model in train
    calls = [0]
    model[4].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    return model, calls, (x, y)




def assert_as_found(model: nn.Module, before: dict[str, Any], calls: list[int]) -> None:
    assert_same(before, snapshot(model))
    fired = calls[0]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(2, 3, dtype=torch.float64))
    assert calls[0] == fired + 1, "the forward hook no longer fires"


def measurements() -> dict[str, Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], Any]]:
    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(1)

    def op_products(backend: str, train: bool) -> Callable:
        def run(m: nn.Module, data: Any) -> Any:
            op = HessianOperator(m, F.cross_entropy, data, backend=backend, train_mode=train)
            v = torch.randn(op.numel, generator=gen(), dtype=torch.float64)
            return op @ v, op.loss(), op.gradient(), op @ torch.stack([v, v], dim=1)

        return run

    out: dict[str, Callable] = {}
    for backend in ("double_backward", "double_backward_fresh", "func"):
        for train in (False, True):
            out[f"HessianOperator[{backend}, train_mode={train}]"] = op_products(backend, train)
    for train in (False, True):
        out[f"GGNOperator[train_mode={train}]"] = lambda m, d, t=train: GGNOperator(
            m, F.cross_entropy, d, train_mode=t) @ torch.ones(sum(p.numel() for p in m.parameters() if p.requires_grad),
                                                             dtype=torch.float64)
        out[f"exact_hessian[train_mode={train}]"] = lambda m, d, t=train: exact_hessian(
            m, F.cross_entropy, d, train_mode=t)
        out[f"loss_surface_1d[train_mode={train}]"] = lambda m, d, t=train: loss_surface_1d(
            m, F.cross_entropy, d, random_direction(m, generator=gen()), alphas=[-0.5, 0.0, 0.5], train_mode=t)
        out[f"loss_surface_2d[train_mode={train}]"] = lambda m, d, t=train: loss_surface_2d(
            m, F.cross_entropy, d, filter_normalized_direction(m, generator=gen()),
            random_direction(m, generator=gen()), alphas=[0.0, 1.0], betas=[-1.0, 1.0], train_mode=t)
    out["top_eigenvalues"] = lambda m, d: top_eigenvalues(HessianOperator(m, F.cross_entropy, d), k=2, generator=gen())
    out["top_eigenvalues[power]"] = lambda m, d: top_eigenvalues(
        HessianOperator(m, F.cross_entropy, d), k=1, method="power", max_iter=20, generator=gen())
    out["hutchinson_trace"] = lambda m, d: hutchinson_trace(HessianOperator(m, F.cross_entropy, d), samples=6,
                                                            method="hutch++", generator=gen())
    out["spectral_density"] = lambda m, d: spectral_density(HessianOperator(m, F.cross_entropy, d), vectors=2,
                                                            steps=5, generator=gen())
    out["interpolation_direction"] = lambda m, d: interpolation_direction(m, m)
    out["experiments.sharpness"] = lambda m, d: sharpness(m, F.cross_entropy, d, generator=gen())
    return out


@pytest.mark.parametrize("name", list(measurements()))
def test_measurement_leaves_the_model_as_found(name):
    model, calls, data = awkward_model()
    before = snapshot(model)
    measurements()[name](model, data)
    assert_as_found(model, before, calls)


def test_alignment_penalties_objective_leaves_grads_params_and_eval_buffers():
    # a training objective: it runs the model as left by the caller; in eval mode nothing may change
    model, calls, (x, y) = awkward_model()
    model.eval()
    before = snapshot(model)
    alignment_penalties(model, F.cross_entropy, [(x[:6], y[:6]), (x[6:], y[6:])], probes=2,
                        generator=torch.Generator().manual_seed(0))
    assert_as_found(model, before, calls)


def test_train_mode_means_the_same_for_the_operator_exact_hessian_and_surfaces():
    # batch statistics, buffers untouched, for every entry point (no Dropout: deterministic)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    buffers = [b.clone() for b in model.buffers()]
    dense = HessianOperator(model, F.cross_entropy, (x, y), train_mode=True).to_dense()
    fresh = HessianOperator(model, F.cross_entropy, (x, y), backend="double_backward_fresh", train_mode=True)
    exact = exact_hessian(model, F.cross_entropy, (x, y), train_mode=True)
    torch.testing.assert_close(dense, exact, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(fresh.to_dense(), exact, atol=1e-10, rtol=1e-8)
    surface = loss_surface_1d(model, F.cross_entropy, (x, y), torch.zeros(dense.shape[0], dtype=torch.float64),
                              alphas=[0.0], train_mode=True)
    with torch.no_grad():
        model.train()
        reference = float(F.cross_entropy(model(x), y))  # the one forward pass here that updates the stats
    assert surface.losses[0].item() == pytest.approx(reference, rel=1e-12)
    for b, s in zip(list(model.buffers())[:2], buffers[:2], strict=True):
        assert not torch.equal(b, s)  # the reference pass did update them; the measurements above did not


def small_problem() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    return model, (x, y), v


def test_operator_after_loss_surface_1d_works_and_matches_a_fresh_operator():
    model, data, v = small_problem()
    op = HessianOperator(model, F.cross_entropy, data)
    first = op @ v
    loss_surface_1d(model, F.cross_entropy, data, random_direction(model, generator=torch.Generator().manual_seed(0)))
    loss_surface_2d(model, F.cross_entropy, data, random_direction(model), random_direction(model),
                    alphas=[0.0, 1.0], betas=[0.5])
    after = op @ v
    torch.testing.assert_close(after, HessianOperator(model, F.cross_entropy, data) @ v, rtol=0, atol=0)
    torch.testing.assert_close(after, first, rtol=0, atol=0)


def test_operator_after_parameters_written_in_place_and_restored_rebuilds():
    # what SAM's worst_case_sharpness and other guards do: same values, written in place (autograd would refuse
    # the cached graph: "modified by an inplace operation")
    model, data, v = small_problem()
    op = HessianOperator(model, F.cross_entropy, data)
    first = op @ v
    with torch.no_grad():
        for p in model.parameters():
            saved = p.clone()
            p.add_(1.0)
            p.copy_(saved)
    torch.testing.assert_close(op @ v, first, rtol=0, atol=0)


def test_operator_follows_changed_parameters_and_buffers():
    model, data, v = small_problem()
    op = HessianOperator(model, F.cross_entropy, data)
    op @ v
    with torch.no_grad():
        model[2].bias[0].add_(0.7)  # the bias is saved by no node of the graph: only the value check sees it
    torch.testing.assert_close(op @ v, HessianOperator(model, F.cross_entropy, data) @ v, rtol=0, atol=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(data[0]), data[1]).backward()
    opt.step()
    torch.testing.assert_close(op @ v, HessianOperator(model, F.cross_entropy, data) @ v, rtol=0, atol=0)
    torch.testing.assert_close(op @ v, exact_hessian(model, F.cross_entropy, data) @ v, rtol=1e-9, atol=1e-12)

    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    w = torch.randn(sum(p.numel() for p in bn.parameters()), dtype=torch.float64)
    op = HessianOperator(bn, F.cross_entropy, data)
    op @ w
    with torch.no_grad():
        bn[1].running_var.mul_(3.0)  # eval-mode BatchNorm: the Hessian depends on the running statistics
    torch.testing.assert_close(op @ w, HessianOperator(bn, F.cross_entropy, data) @ w, rtol=0, atol=0)
