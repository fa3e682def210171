"""Property-based tests of the Hessian pillar's public functions (issue 12): NaN/inf values, wrong dtypes and
shapes, out-of-range classes, negative or zero counts and radii, empty data, foreign parameters. Each call
either raises a ValueError/TypeError whose message names the argument, or returns a finite result of the
documented shape. Tiny float64 models; derandomized, so CI is not flaky."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from labkit.hessian import (
    DenseOperator,
    GGNOperator,
    HessianOperator,
    LambdaOperator,
    ScalarNetwork,
    alignment_penalties,
    exact_hessian,
    filter_normalized_direction,
    gradient_descent,
    gradient_flow_solution,
    hessian_approximations,
    hutchinson_trace,
    lanczos,
    loss_surface_1d,
    loss_surface_2d,
    outlier_count,
    random_direction,
    regularized_newton,
    run_scalar,
    softmax_regression_hessian,
    softmax_regression_loss_grad,
    spectral_density,
    spurious_domain,
    subspace_fraction,
    top_eigenvalues,
)
from labkit.hessian.experiments import rescaled_copy, train_network

torch.set_num_threads(1)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
FEW = settings(max_examples=12, deadline=None, derandomize=True)

D_IN, CLASSES = 3, 3


def tiny_model(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(D_IN, 4), nn.Tanh(), nn.Linear(4, CLASSES)).double()


MODEL = tiny_model()
OTHER = tiny_model(1)
P = sum(p.numel() for p in MODEL.parameters())
G = torch.Generator().manual_seed(0)
X = torch.randn(10, D_IN, generator=G, dtype=torch.float64)
Y = torch.randint(0, CLASSES, (10,), generator=G)
OP = HessianOperator(MODEL, F.cross_entropy, (X, Y))


def finite(t: Any) -> bool:
    if isinstance(t, torch.Tensor):
        return bool(torch.isfinite(t).all())
    return math.isfinite(float(t))


def outcome(call: Callable[[], Any], names: str | tuple[str, ...], valid: Callable[[Any], bool]) -> str:
    """Run ``call``: a ValueError/TypeError must name one of ``names``; a result must pass ``valid``."""
    names = (names,) if isinstance(names, str) else names
    try:
        out = call()
    except (ValueError, TypeError) as exc:
        assert any(n in str(exc) for n in names), f"error does not name {names}: {exc}"
        return "refused"
    assert valid(out), f"accepted but invalid result: {out!r}"
    return "accepted"


# --- building blocks ------------------------------------------------------------------------------------------

SPECIAL = st.sampled_from([None, float("nan"), float("inf")])


def vector(dtype: torch.dtype, length: int, special: float | None) -> torch.Tensor:
    v = torch.linspace(-1, 1, length, dtype=torch.float64)
    if special is not None and length:
        v[length // 2] = special
    return v.to(dtype) if dtype != torch.float64 else v




DATA_FAULTS = [None, None, "empty", "features", "no feature dim", "float32", "int64", "nan", "inf", "class too high",
               "negative class", "float classes", "meta", "rows mismatch", "not a pair", "list of batches"]


@st.composite
def batches(draw: Any) -> tuple[Any, str | None]:
    """Valid data or data with one fault: dtype, feature size, NaN/inf, empty, out-of-range classes, meta device.
    A list of two good batches is valid too."""
    fault = draw(st.sampled_from(DATA_FAULTS))
    x, y = X.clone(), Y.clone()
    data: Any = {
        None: (x, y), "empty": (x[:0], y[:0]), "features": (torch.ones(10, D_IN + 1, dtype=torch.float64), y),
        "no feature dim": (x[:, 0], y), "float32": (x.float(), y), "int64": (x.long(), y),
        "nan": (x.index_fill(0, torch.tensor([3]), float("nan")), y), "inf": (torch.full_like(x, float("inf")), y),
        "class too high": (x, torch.full_like(y, CLASSES)), "negative class": (x, torch.full_like(y, -1)),
        "float classes": (x, y.double()),
        "meta": (x.to("meta"), y.to("meta")), "rows mismatch": (x, y[:4]), "not a pair": x,
        "list of batches": [(x[:6], y[:6]), (x[6:], y[6:])],
    }[fault]
    return data, None if fault in (None, "list of batches") else fault


# --- operators ----------------------------------------------------------------------------------------------------


VECTOR_FAULTS = [None, None, "float32", "column", "int64", "int32", "bool", "complex", "short", "empty", "nan",
                 "inf", "meta", "list"]


@SETTINGS
@given(fault=st.sampled_from(VECTOR_FAULTS))
def test_operator_products_refuse_or_return_a_finite_vector(fault):
    v = torch.linspace(-1, 1, P, dtype=torch.float64)
    v = {None: v, "float32": v.float(), "column": v[:, None], "int64": v.long(), "int32": v.int(), "bool": v > 0,
         "complex": v.to(torch.complex64), "short": v[1:], "empty": v[:0], "nan": v.index_fill(0, torch.tensor([2]),
                                                                                                float("nan")),
         "inf": v.index_fill(0, torch.tensor([2]), float("inf")), "meta": v.to("meta"), "list": v.tolist()}[fault]
    expected = (P, 1) if fault == "column" else (P,)
    for op in (OP, DenseOperator(OP.to_dense()), LambdaOperator(OP.matvec, P)):
        result = outcome(lambda op=op: op @ v, ("v", "vectors"),
                         lambda out: tuple(out.shape) == expected and finite(out) and out.dtype == v.dtype)
        assert result == ("accepted" if fault in (None, "float32", "column") else "refused"), (fault, result)


def test_listed_cases_of_issue_12():
    # `op @ v` with an integer v rounded the product to integers: now a TypeError naming v
    with pytest.raises(TypeError, match="v must be a floating-point vector"):
        OP @ torch.ones(P, dtype=torch.int64)
    # loss_surface_1d(alphas=[nan, 0]) returned a NaN loss: now a ValueError naming alphas
    with pytest.raises(ValueError, match="alphas contains NaN"):
        loss_surface_1d(MODEL, F.cross_entropy, (X, Y), torch.ones(P, dtype=torch.float64), alphas=[float("nan"), 0])
    # float64 inputs to a float32 model: a TypeError naming data instead of "mat1 and mat2 must have the same dtype"
    with pytest.raises(TypeError, match="data inputs has dtype torch.float64"):
        HessianOperator(tiny_model().float(), F.cross_entropy, (X, Y))
    # wrong feature size and out-of-range classes name the data
    with pytest.raises(ValueError, match=r"data inputs of shape \(10, 2\)"):
        HessianOperator(MODEL, F.cross_entropy, (X[:, :2], Y))
    with pytest.raises(ValueError, match="data targets"):
        HessianOperator(MODEL, F.cross_entropy, (X, Y + CLASSES))


@SETTINGS
@given(data=batches(), which=st.sampled_from(["double_backward", "double_backward_fresh", "func", "ggn", "exact"]))
def test_operators_check_their_data(data, which):
    data, fault = data
    v = torch.ones(P, dtype=torch.float64)

    def call() -> torch.Tensor:
        if which == "exact":
            return exact_hessian(MODEL, F.cross_entropy, data)
        if which == "ggn":
            return GGNOperator(MODEL, F.cross_entropy, data) @ v
        return HessianOperator(MODEL, F.cross_entropy, data, backend=which) @ v

    shape = (P, P) if which == "exact" else (P,)
    result = outcome(call, "data", lambda out: tuple(out.shape) == shape and finite(out))
    cast = which == "exact" and fault == "float32"  # exact_hessian casts floating inputs to its dtype
    assert result == ("accepted" if fault is None or cast else "refused"), (fault, result)


@FEW
@given(params=st.sampled_from(["foreign", "repeated", "empty", "tensor", "frozen-only"]),
       which=st.sampled_from(["operator", "exact", "surface", "direction", "filter"]))
def test_foreign_or_empty_params_are_refused(params, which):
    chosen = {"foreign": [OTHER[0].weight], "repeated": [MODEL[0].weight, MODEL[0].weight], "empty": [],
              "tensor": MODEL[0].weight, "frozen-only": [torch.zeros(3, requires_grad=True)]}[params]
    calls = {
        "operator": lambda: HessianOperator(MODEL, F.cross_entropy, (X, Y), params=chosen),
        "exact": lambda: exact_hessian(MODEL, F.cross_entropy, (X, Y), params=chosen),
        "surface": lambda: loss_surface_1d(MODEL, F.cross_entropy, (X, Y), torch.ones(P), params=chosen),
        "direction": lambda: random_direction(MODEL, params=chosen),
        "filter": lambda: filter_normalized_direction(MODEL, params=chosen),
    }
    assert outcome(calls[which], ("params", "parameters"), lambda out: False) == "refused"


def spoiled(data: Any, valid: dict[str, Any], bad: dict[str, list[Any]]) -> tuple[dict[str, Any], str | None]:
    """``valid`` keyword arguments with at most one of them (drawn, or none) replaced by a value from ``bad``
    (some of those are edge cases that must be accepted)."""
    name = data.draw(st.sampled_from([None, *bad]))
    kwargs = dict(valid)
    if name is not None:
        kwargs[name] = data.draw(st.sampled_from(bad[name]))
    return kwargs, name


def check_spoiled(call: Callable[..., Any], data: Any, valid: dict[str, Any], bad: dict[str, list[Any]],
                  ok: Callable[[Any, dict[str, Any]], bool]) -> None:
    kwargs, name = spoiled(data, valid, bad)
    result = outcome(lambda: call(**kwargs), name or tuple(bad), lambda out: ok(out, kwargs))
    if name is None:
        assert result == "accepted", "the valid arguments were refused"


BAD_REALS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, True, "1", None]
BAD_COUNTS = [-1, 0, 2.5, True, None, "2"]


@SETTINGS
@given(data=st.data())
def test_operator_and_exact_options(data):
    ones = torch.ones(P, dtype=torch.float64)
    check_spoiled(lambda **kw: HessianOperator(MODEL, F.cross_entropy, (X, Y), **kw) @ ones, data,
                  {"backend": "double_backward", "train_mode": False},
                  {"backend": ["nope", 3, "func"], "train_mode": [1, "yes", None, True]},
                  lambda out, _: out.shape == (P,) and finite(out))
    check_spoiled(lambda **kw: exact_hessian(MODEL, F.cross_entropy, (X, Y), **kw), data,
                  {"chunk_size": 8, "dtype": torch.float64, "train_mode": False},
                  {"chunk_size": [*BAD_COUNTS, 1, 1000], "dtype": [torch.int64, "float64", torch.float32],
                   "train_mode": [1, None, True]},
                  lambda out, _: out.shape == (P, P) and finite(out))


# --- spectra --------------------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_top_eigenvalues_options(data):
    def ok(r: Any, kw: dict[str, Any]) -> bool:
        k = kw["k"]
        return r.eigenvalues.shape == (k,) and r.eigenvectors.shape == (P, k) and finite(r.eigenvalues)

    check_spoiled(lambda **kw: top_eigenvalues(OP, **kw), data,
                  {"k": 2, "tol": 1e-4, "max_iter": None, "method": "lanczos", "which": "largest",
                   "generator": torch.Generator().manual_seed(0)},
                  {"k": [*BAD_COUNTS, P + 1, 1, P], "tol": [*BAD_REALS, 0.5], "max_iter": [*BAD_COUNTS[:-2], 1, 3],
                   "method": ["qr", None, "power"], "which": ["smallest", 1, "magnitude"],
                   "generator": [0, "gen", None]}, ok)


@SETTINGS
@given(data=st.data())
def test_hutchinson_trace_options(data):
    check_spoiled(lambda **kw: hutchinson_trace(OP, **kw), data,
                  {"samples": 6, "method": "hutchinson", "distribution": "rademacher",
                   "generator": torch.Generator().manual_seed(0)},
                  {"samples": [*BAD_COUNTS, 1, 2, 3.0], "method": ["x", None, "hutch++"],
                   "distribution": ["uniform", 0, "gaussian"], "generator": [0, "gen", None]},
                  lambda r, _: finite(r.estimate) and finite(r.stderr) and r.values.shape[0] >= 2)


@SETTINGS
@given(data=st.data())
def test_spectral_density_options(data):
    def ok(d: Any, _: dict[str, Any]) -> bool:
        return d.density.shape == d.grid.shape and finite(d.density) and finite(d.nodes)

    check_spoiled(lambda **kw: spectral_density(OP, **kw), data,
                  {"vectors": 2, "steps": 5, "sigma": None, "grid": None,
                   "generator": torch.Generator().manual_seed(0)},
                  {"vectors": [*BAD_COUNTS, 1], "steps": [*BAD_COUNTS, P + 1, 1, P],
                   "sigma": [*BAD_REALS[:-1], 1e-3, 5.0],
                   "grid": [1, True, "grid", torch.tensor([0.0, float("nan")]), torch.ones(3, 2), 50,
                            torch.linspace(-1, 3, 20)],
                   "generator": [0, "gen"]}, ok)


@SETTINGS
@given(data=st.data())
def test_lanczos_start_vector_and_steps(data):
    v0 = torch.linspace(-1, 1, P, dtype=torch.float64)
    check_spoiled(lambda **kw: lanczos(OP, **kw), data, {"v0": v0, "steps": 4},
                  {"v0": [v0.float(), v0.long(), v0 > 0, v0[1:], torch.zeros(P), v0.index_fill(0, torch.tensor([1]),
                          float("nan")), v0.to("meta"), v0.tolist(), v0[:, None]],
                   "steps": [*BAD_COUNTS, 1, P, P + 5]},
                  lambda r, kw: finite(r.alphas) and finite(r.betas) and r.basis.shape[0] == P)


@SETTINGS
@given(values=st.sampled_from(["ok", "nan", "short", "strings", "empty"]),
       max_outliers=st.sampled_from([*BAD_COUNTS, 3]),
       basis=st.sampled_from(["ok", "nan", "shape"]), vector_kind=st.sampled_from(["ok", "zero", "inf"]))
def test_spectrum_helpers(values, max_outliers, basis, vector_kind):
    eig = {"ok": torch.tensor([9.0, 8.0, 1.0, 0.5]), "nan": torch.tensor([9.0, float("nan"), 1.0]),
           "short": torch.tensor([1.0]), "strings": ["a", "b"], "empty": torch.tensor([])}[values]
    outcome(lambda: outlier_count(eig, max_outliers=max_outliers), ("eigenvalues", "max_outliers"),
            lambda k: isinstance(k, int) and k >= 1)
    b = {"ok": torch.eye(P)[:, :2], "nan": torch.full((P, 2), float("nan")), "shape": torch.eye(3)}[basis]
    v = {"ok": torch.ones(P), "zero": torch.zeros(P), "inf": torch.full((P,), float("inf"))}[vector_kind]
    outcome(lambda: subspace_fraction(v, b), ("vector", "basis"), lambda f: 0.0 <= f <= 1.0 + 1e-12)


# --- landscapes ----------------------------------------------------------------------------------------------------


BAD_GRIDS = [[float("nan"), 0.0], [float("inf")], [], "ab", [[0.0, 1.0]], torch.tensor([0.5]),
             torch.tensor([float("nan")]), 0.25, [0.0, 1.0]]
BAD_DIRECTIONS = [vector(torch.float64, P, float("nan")), vector(torch.float64, P + 1, None),
                  torch.ones(P, dtype=torch.bool), torch.ones(P, 1), torch.ones(P, device="meta"), [1.0] * P,
                  vector(torch.float32, P, None), torch.ones(P, dtype=torch.int64)]


def grid_length(values: Any) -> int:
    return len(torch.as_tensor(values).reshape(-1))


@SETTINGS
@given(data=st.data())
def test_loss_surfaces_check_grids_and_directions(data):
    check_spoiled(lambda **kw: loss_surface_1d(MODEL, F.cross_entropy, (X, Y), **kw), data,
                  {"direction": torch.ones(P, dtype=torch.float64), "alphas": [0.0, 0.5], "train_mode": False},
                  {"direction": BAD_DIRECTIONS, "alphas": BAD_GRIDS, "train_mode": [0, None, True]},
                  lambda s, kw: s.losses.shape == (grid_length(kw["alphas"]),) and finite(s.losses))
    check_spoiled(lambda **kw: loss_surface_2d(MODEL, F.cross_entropy, (X, Y), **kw), data,
                  {"d1": torch.ones(P, dtype=torch.float64), "d2": -torch.ones(P, dtype=torch.float64),
                   "alphas": [0.0], "betas": [0.0, 0.5]},
                  {"d1": BAD_DIRECTIONS, "d2": BAD_DIRECTIONS, "alphas": BAD_GRIDS, "betas": BAD_GRIDS},
                  lambda s, kw: s.losses.shape == (grid_length(kw["alphas"]), grid_length(kw["betas"]))
                  and finite(s.losses))


@FEW
@given(data=batches())
def test_loss_surface_checks_its_data(data):
    data, fault = data
    result = outcome(lambda: loss_surface_1d(MODEL, F.cross_entropy, data, torch.ones(P), alphas=[0.0, 0.5]), "data",
                     lambda s: s.losses.shape == (2,) and finite(s.losses))
    assert result == ("accepted" if fault is None else "refused"), (fault, result)


# --- Newton, scalar networks, alignment ------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_softmax_regression_hessian_inputs(data):
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.zeros(3, 2, dtype=torch.float64)
    check_spoiled(softmax_regression_hessian, data, {"x": x, "weight": w, "l2": 0.0, "rows": None},
                  {"x": [x.clone().fill_(float("inf")), x.float(), x[:0], x[0]],
                   "weight": [w.float(), torch.zeros(3, 5, dtype=torch.float64), w.clone().fill_(float("nan"))],
                   "l2": BAD_REALS,
                   "rows": [torch.tensor([0, 2]), torch.tensor([0, 6]), torch.tensor([-1]), torch.tensor([0.0]),
                            torch.tensor([], dtype=torch.long), [0, 1]]},
                  lambda h, _: h.shape == (6, 6) and finite(h))


@SETTINGS
@given(data=st.data())
def test_newton_and_descent_options(data):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    check_spoiled(softmax_regression_loss_grad, data, {"x": x, "y": y, "l2": 0.1},
                  {"x": [x.float(), x[:0], x[0], x.clone().fill_(float("nan"))],
                   "y": [-y, y.float(), y[:3], y[:, None]], "l2": BAD_REALS}, lambda f, _: callable(f))
    loss_grad = softmax_regression_loss_grad(x, y, l2=0.1)
    check_spoiled(lambda **kw: hessian_approximations(x, **kw), data,
                  {"classes": 3, "l2": 0.1, "subsample": 0.5, "stale_every": 2, "generator": g},
                  {"classes": BAD_COUNTS, "l2": BAD_REALS, "subsample": [*BAD_REALS, 1.5, 1.0],
                   "stale_every": BAD_COUNTS, "generator": [0, "g"]}, lambda a, _: len(a) == 4)
    hessian = hessian_approximations(x, classes=3, l2=0.1)["exact"].hessian
    x0 = torch.zeros(6, dtype=torch.float64)
    bad_x0 = [vector(torch.float64, 6, float("nan")), torch.zeros(6, dtype=torch.int64), torch.zeros(6, 1), [0.0] * 6]
    check_spoiled(lambda **kw: regularized_newton(loss_grad, hessian, **kw), data,
                  {"x0": x0, "steps": 2, "lipschitz": 1.0, "tol": 0.0},
                  {"x0": bad_x0, "steps": BAD_COUNTS, "lipschitz": BAD_REALS, "tol": [*BAD_REALS[:4], True, "1"]},
                  lambda r, _: finite(r.x) and all(map(finite, r.losses)))
    check_spoiled(lambda **kw: gradient_descent(loss_grad, **kw), data, {"x0": x0, "lr": 0.5, "steps": 2},
                  {"x0": bad_x0, "lr": BAD_REALS, "steps": BAD_COUNTS},
                  lambda r, _: finite(r.x) and all(map(finite, r.losses)))


@SETTINGS
@given(data=st.data())
def test_scalar_networks(data):
    bad_weights = [[float("nan"), 1.0], [], [float("inf")], "ab", torch.ones(2, device="meta")]
    check_spoiled(ScalarNetwork, data, {"weights": [0.5, 2.0]}, {"weights": bad_weights}, lambda m, _: finite(m.weight))
    check_spoiled(gradient_flow_solution, data, {"weights": [0.5, 2.0], "x": 1.0, "y": 1.0, "tol": 1e-12},
                  {"weights": [*bad_weights, [1.0, 0.0]], "x": BAD_REALS, "y": BAD_REALS, "tol": BAD_REALS},
                  lambda w, _: finite(w))
    check_spoiled(run_scalar, data, {"weights": [0.5, 2.0], "fraction": 0.9, "steps": 3},
                  {"weights": bad_weights, "fraction": BAD_REALS, "steps": BAD_COUNTS},
                  lambda r, kw: r.loss.shape == (kw["steps"],) and finite(r.eta))


@SETTINGS
@given(data=st.data())
def test_alignment_inputs(data):
    check_spoiled(spurious_domain, data,
                  {"n": 6, "rho": 0.9, "noise": 1.0, "spurious_noise": 0.1, "generator": torch.Generator()},
                  {"n": BAD_COUNTS, "rho": [*BAD_REALS, 1.5, 1.0], "noise": BAD_REALS, "spurious_noise": BAD_REALS,
                   "generator": [0, "g"]},
                  lambda d, kw: d.inputs.shape == (kw["n"], 2) and finite(d.inputs))
    head = nn.Linear(2, 1).double()
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(4, 2)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)

    def loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.squeeze(1), t)

    bad_domains = [[(x, y)], [(x, y), (x.clone().fill_(float("nan")), y)], [(x, y), (x[:0], y[:0])],
                   [(x, y), (torch.ones(4, 3, dtype=torch.float64), y)], [(x, y), (x.float(), y)], (x, y),
                   [(x, y), x]]
    check_spoiled(lambda **kw: alignment_penalties(head, loss, **kw), data,
                  {"domains": [(x, y), (x.flip(0), y)], "probes": 2, "generator": torch.Generator()},
                  {"domains": bad_domains, "probes": [*BAD_COUNTS[:-2], None, 1], "generator": [0, "g"]},
                  lambda r, _: all(finite(t) for t in r))


@FEW
@given(data=st.data())
def test_experiment_options(data):
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    check_spoiled(lambda **kw: rescaled_copy(net, **kw), data, {"factor": 2.0}, {"factor": BAD_REALS},
                  lambda m, _: isinstance(m, nn.Sequential))
    check_spoiled(lambda **kw: train_network(net, (X, Y), optimizer="sgd", **kw), data,
                  {"lr": 0.1, "steps": 2, "target_loss": None, "batch_size": None},
                  {"lr": BAD_REALS, "steps": BAD_COUNTS, "target_loss": BAD_REALS[:-1], "batch_size": BAD_COUNTS[:-2]},
                  lambda h, _: all(map(finite, h.loss)))
