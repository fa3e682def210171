"""labkit.dynamics.sensing: matrix sensing (Jin et al., arXiv 2301.11500) against its definition, the closed-form
gradient against autograd, learning times on hand-made histories, and GD's incremental learning."""

import pytest
import torch

from labkit.dynamics.sensing import (
    SensingProblem,
    incremental_learning_times,
    matrix_sensing,
    sensing_gd,
    sensing_gradient,
    sensing_loss,
)


def problem(seed=0, d=8, rank=2, m=120, **kw):
    return matrix_sensing(d, rank, m, generator=torch.Generator().manual_seed(seed), **kw)


def test_measurements_match_their_definition():
    p = problem(singular_values=[5.0, 2.0])
    assert isinstance(p, SensingProblem)
    assert p.A.shape == (120, 8, 8) and p.y.shape == (120,) and p.target.shape == (8, 8)
    assert torch.allclose(p.A, p.A.transpose(1, 2))
    for k in (0, 7, 119):
        assert torch.allclose(p.y[k], (p.A[k] * p.target).sum())
    assert torch.allclose(p.target, p.target.T)
    eig = torch.linalg.eigvalsh(p.target).flip(0)
    assert torch.allclose(eig[:2], torch.tensor([5.0, 2.0], dtype=torch.float64), atol=1e-10)
    assert eig[2:].abs().max() < 1e-10


def test_same_generator_same_problem_and_default_spectrum():
    a, b = problem(3), problem(3)
    assert torch.equal(a.A, b.A) and torch.equal(a.target, b.target)
    eig = torch.linalg.eigvalsh(problem(1, rank=3).target).flip(0)[:3]
    assert torch.allclose(eig, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), atol=1e-10)


def test_gradient_matches_autograd():
    p = problem(1)
    U = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    (g,) = torch.autograd.grad(sensing_loss(p, U), U)
    assert torch.allclose(sensing_gradient(p, U.detach()), g, rtol=1e-10, atol=1e-12)


def test_loss_is_zero_at_the_target_factor():
    p = problem(2)
    eigval, eigvec = torch.linalg.eigh(p.target)
    U = eigvec * eigval.clamp(min=0).sqrt()
    assert float(sensing_loss(p, U)) < 1e-20


def test_learning_times_on_a_hand_made_history():
    target = torch.tensor([4.0, 2.0, 0.0])
    history = torch.tensor([[0.1, 0.1, 0.0], [2.0, 0.1, 0.0], [3.9, 0.5, 0.0], [4.0, 1.0, 0.0], [4.0, 2.0, 0.0]])
    assert incremental_learning_times(history, target).tolist() == [1, 3]
    assert incremental_learning_times(history, target, steps=torch.tensor([0, 10, 20, 30, 40])).tolist() == [10, 30]
    assert incremental_learning_times(history[:3], target).tolist() == [1, -1]
    # the same from (T, d, d) iterates and a matrix target
    mats = torch.stack([torch.diag(h) for h in history]).double()
    assert incremental_learning_times(mats, torch.diag(target).double()).tolist() == [1, 3]


def test_small_initialization_learns_one_eigenvalue_at_a_time():
    p = problem(0, d=10, rank=3, m=200)
    run = sensing_gd(p, init_scale=1e-4, lr=0.05, steps=400, generator=torch.Generator().manual_seed(5))
    times = incremental_learning_times(run.eigenvalues, p.target, steps=run.steps)
    assert (times > 0).all() and times[0] < times[1] < times[2]
    assert float(run.error[-1]) < 1e-2
    assert run.eigenvalues.shape == (401, 10) and not run.stopped


def test_stop_and_bad_input():
    p = problem(0)
    run = sensing_gd(p, init_scale=0.1, lr=0.05, steps=100, record_every=10, stop=lambda done, total: done >= 20)
    assert run.stopped and run.steps.tolist() == [0, 10, 20]
    with pytest.raises(FloatingPointError, match="lr"):
        sensing_gd(p, init_scale=1.0, lr=50.0, steps=200)
    with pytest.raises(ValueError, match="rank"):
        matrix_sensing(4, 5, 10)
    with pytest.raises(ValueError, match="singular_values"):
        matrix_sensing(4, 2, 10, singular_values=[1.0])
    with pytest.raises(ValueError, match="U"):
        sensing_loss(p, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="problem"):
        sensing_gradient((p.A, p.y, p.target), torch.zeros(8, 2))
    with pytest.raises(ValueError, match="init_scale"):
        sensing_gd(p, init_scale=0.0, lr=0.1, steps=3)
    with pytest.raises(ValueError, match="history"):
        incremental_learning_times(torch.zeros(3, 2, 2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="steps"):
        incremental_learning_times(torch.ones(3, 2), torch.ones(2), steps=torch.arange(4))
