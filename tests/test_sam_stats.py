"""labkit.sam.stats: closed forms (binomial and paired standard errors), scipy as the oracle for Kendall's tau-b,
and the bootstrap interval's definition (what it resamples, determinism, degenerate families)."""

import math

import pytest
import torch
from scipy.stats import kendalltau

from labkit.sam import TauInterval, binomial_se, bootstrap_tau, kendall_tau, kendall_tau_b, paired_se


def test_binomial_se_closed_form():
    assert binomial_se(0.1, 900) == pytest.approx(math.sqrt(0.09 / 900))
    assert binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="error"):
        binomial_se(1.5, 10)
    with pytest.raises(ValueError, match="n"):
        binomial_se(0.1, 0)


def test_paired_se_is_the_standard_error_of_the_mean_per_image_difference():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(500, generator=gen) < 0.9
    b = torch.rand(500, generator=gen) < 0.8
    d = a.double() - b.double()
    oracle = math.sqrt(d.var(unbiased=False).item() / len(d))
    assert paired_se(a, b) == pytest.approx(oracle, rel=1e-12)
    assert paired_se(a, a) == 0.0                      # identical predictions: no noise in the difference


def test_paired_se_refuses_bad_input():
    with pytest.raises(TypeError, match="correct_a"):
        paired_se(torch.ones(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="same images"):
        paired_se(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


def test_kendall_tau_b_matches_scipy_with_ties_and_batches():
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 4, (20, 9), generator=gen).double()     # many ties
    y = torch.randn(20, 9, generator=gen, dtype=torch.float64).round()
    taus = kendall_tau_b(x, y)
    for row in range(20):
        expected = kendalltau(x[row].numpy(), y[row].numpy()).statistic
        expected = 0.0 if math.isnan(expected) else expected
        assert taus[row].item() == pytest.approx(expected, abs=1e-12)
        assert kendall_tau(x[row].tolist(), y[row].tolist()) == pytest.approx(expected, abs=1e-12)
    assert kendall_tau_b(torch.ones(5), torch.arange(5.0)).item() == 0.0   # no ranking: 0, not NaN


def test_bootstrap_tau_of_a_perfect_ranking_is_certain():
    result = bootstrap_tau([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0], resamples=500,
                           generator=torch.Generator().manual_seed(0))
    assert isinstance(result, TauInterval)
    assert result.tau == 1.0
    assert result.low >= 0.0 and result.high == 1.0    # resampled runs repeat: ties can only give 0 or 1
    assert result.contains(1.0) and not result.contains(-0.5)


def test_bootstrap_tau_with_a_correctness_matrix_uses_test_errors():
    gen = torch.Generator().manual_seed(2)
    skill = torch.linspace(0.6, 0.95, 8)
    correct = torch.rand(8, 2000, generator=gen) < skill[:, None]   # run i right with probability skill[i]
    error = (~correct).double().mean(1)
    x = (1 - skill).tolist()                                         # a measure that tracks the true error
    result = bootstrap_tau(x, correct, resamples=400, generator=torch.Generator().manual_seed(3))
    assert result.tau == pytest.approx(kendalltau(x, error.numpy()).statistic)
    assert result.low > 0.5                                          # errors far apart: a clear positive relation
    again = bootstrap_tau(x, correct, resamples=400, generator=torch.Generator().manual_seed(3))
    assert again == result                                           # the generator fixes the resamples


def test_bootstrap_interval_widens_when_test_noise_dominates():
    gen = torch.Generator().manual_seed(4)
    correct = torch.rand(8, 300, generator=gen) < 0.9                # every run equally good: errors are noise
    x = torch.arange(8.0).tolist()
    result = bootstrap_tau(x, correct, resamples=400, generator=torch.Generator().manual_seed(5))
    assert result.contains(0.0)


def test_bootstrap_tau_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        bootstrap_tau([1.0, 2.0], torch.ones(3, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="one per run"):
        bootstrap_tau([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_tau([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_tau([1.0, 2.0], [1.0, 2.0], level=1.0)
    with pytest.raises(TypeError, match="generator"):
        bootstrap_tau([1.0, 2.0], [1.0, 2.0], generator=0)
