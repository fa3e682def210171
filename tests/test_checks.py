"""labkit.checks: the shared argument checks name the argument and what was expected."""

import math

import pytest
import torch
from torch import nn

from labkit import checks


@pytest.mark.parametrize("value, kwargs, error, match", [
    (float("nan"), {}, ValueError, "rho must be a finite number"),
    (math.inf, {}, ValueError, "finite"),
    (True, {}, TypeError, "real number"),
    ("1", {}, TypeError, "real number"),
    (-1.0, {"low": 0}, ValueError, "rho must be >= 0"),
    (0.0, {"low": 0, "low_open": True}, ValueError, "rho must be > 0"),
    (2.0, {"high": 1}, ValueError, "rho must be <= 1"),
])
def test_number_refuses_nan_inf_bools_and_out_of_range(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        checks.number(value, "rho", **kwargs)


def test_number_and_integer_accept_good_values():
    assert checks.number(torch.tensor(0.5), "w", low=0, high=1) == 0.5
    assert checks.integer(3, "k", low=1) == 3 and checks.positive_int(1, "n") == 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        checks.positive_int(0, "n")
    with pytest.raises(TypeError, match="k must be an int"):
        checks.integer(2.0, "k")


def test_tensor_checks():
    x = torch.randn(2, 3)
    assert checks.tensor(x, "x", floating=True, ndim=2) is x
    with pytest.raises(ValueError, match="meta"):
        checks.tensor(torch.empty(2, device="meta"), "x")
    with pytest.raises(ValueError, match="x contains NaN"):
        checks.tensor(torch.tensor([1.0, math.nan]), "x")
    with pytest.raises(TypeError, match="floating-point"):
        checks.tensor(torch.arange(3), "x", floating=True)
    with pytest.raises(ValueError, match="empty"):
        checks.tensor(torch.zeros(0), "x", nonempty=True)
    with pytest.raises(ValueError, match="at least 3"):
        checks.tensor(x, "x", min_ndim=3)


def test_dtype_mismatch_with_the_model_is_named():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters are torch.float32"):
        checks.same_dtype_as_model(torch.randn(2, 3, dtype=torch.float64), model)
    checks.same_dtype_as_model(torch.randn(2, 3), model)


def test_class_indices():
    assert checks.class_indices(2, 3, "label").item() == 2
    with pytest.raises(ValueError, match=r"label must hold class indices in \[0, 3\)"):
        checks.class_indices(torch.tensor([0, 3]), 3, "label")
    with pytest.raises(TypeError, match="integer tensor"):
        checks.class_indices(torch.tensor([0.0]), 3, "label")
    assert checks.choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="mode must be one of"):
        checks.choice("c", "mode", ("a", "b"))
