"""Property-based checks of the SAM pillar's public functions (hypothesis, derandomized).

Each example changes one argument of a valid call (a number to NaN/inf/negative/zero/huge/a wrong type,
the data to NaN, another dtype, another feature size, no rows, labels out of range, the meta device, the
parameters to another model's). The call must either raise a ``ValueError``/``TypeError`` whose message
names that argument, or return a finite result of the documented type.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from labkit.sam import (
    SAM,
    TopEigenvalue,
    TraceEstimate,
    frozen_running_stats,
    hessian_top_eigenvalue,
    hessian_trace,
    kendall_tau,
    make_optimizer,
    noisy_labels,
    norm_only_sam,
    norm_parameters,
    sharpness_measures,
    train_from,
    worst_case_sharpness,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a non-converged Lanczos warns, by design

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))


NET = make_net()
_g = torch.Generator().manual_seed(1)
X = torch.randn(8, 3, generator=_g)
Y = torch.randint(0, 2, (8,), generator=_g)
OTHER = nn.Linear(3, 2)

# Numbers that are wrong somewhere: NaN, infinities, negatives, zero, huge, bools, strings, None.
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300, -1e-12]),
    st.integers(min_value=-3, max_value=6),
    st.sampled_from([True, False, None, "0.1", [0.1]]),
)


def outcome(call: Callable[[], Any], names: tuple[str, ...], valid: Callable[[Any], None],
            errors: tuple[type[Exception], ...] = (ValueError, TypeError)) -> Any:
    """Run ``call``: a ValueError/TypeError must name one of ``names``; a result must pass ``valid``."""
    try:
        result = call()
    except errors as err:
        assert any(n in str(err) for n in names), f"{type(err).__name__} does not name {names}: {err}"
        return None
    valid(result)
    return result


def finite_float(kind: type = float, low: float = -math.inf) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        assert isinstance(value, kind), type(value)
        assert math.isfinite(float(value)) and float(value) >= low, value
    return check


# --- data mutations ---------------------------------------------------------------------------------

def _mutations() -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    def nan_at(x: torch.Tensor, value: float) -> torch.Tensor:
        x = x.clone()
        x[3, 1] = value
        return x

    return {
        "nan inputs": lambda x, y: (nan_at(x, math.nan), y),
        "inf inputs": lambda x, y: (nan_at(x, math.inf), y),
        "float64 inputs": lambda x, y: (x.double(), y),
        "integer inputs": lambda x, y: (x.long(), y),
        "too few features": lambda x, y: (x[:, :2], y),
        "too many features": lambda x, y: (torch.cat([x, x], 1), y),
        "no batch dimension": lambda x, y: (x[0], y),
        "0-d inputs": lambda x, y: (x[0, 0], y),
        "no rows": lambda x, y: (x[:0], y[:0]),
        "fewer targets": lambda x, y: (x, y[:-1]),
        "label too large": lambda x, y: (x, y + 2),
        "negative label": lambda x, y: (x, y - 3),
        "float targets": lambda x, y: (x, y.float()),
        "bool targets": lambda x, y: (x, y.bool()),
        "meta inputs": lambda x, y: (x.to("meta"), y),
        "meta targets": lambda x, y: (x, y.to("meta")),
        "not a pair": lambda x, y: (x,),
        "a dict": lambda x, y: {"x": x, "y": y},
        "inputs only": lambda x, y: x,
    }


MUTATIONS = _mutations()
DATA = st.sampled_from(sorted(MUTATIONS))


def bad_params(model: nn.Module) -> dict[str, Any]:
    return {
        "another model's": list(OTHER.parameters()),
        "one foreign": [next(model.parameters()), OTHER.weight],
        "empty": [],
        "repeated": [next(model.parameters())] * 2,
        "a tensor": next(model.parameters()),
        "not tensors": ["w"],
    }


PARAMS = st.sampled_from(sorted(bad_params(NET)))


# --- measurements -----------------------------------------------------------------------------------

MEASUREMENTS: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[[Any], None]]] = {
    "hessian_top_eigenvalue": (
        lambda m, d, loss=F.cross_entropy, **kw: hessian_top_eigenvalue(m, loss, d, **kw), {"tol": 1e-3},
        finite_float(TopEigenvalue)),
    "hessian_trace": (
        lambda m, d, loss=F.cross_entropy, **kw: hessian_trace(m, loss, d, **kw), {"samples": 3},
        finite_float(TraceEstimate)),
    "worst_case_sharpness": (
        lambda m, d, loss=F.cross_entropy, **kw: worst_case_sharpness(m, loss, d, **kw), {"rho": 0.1, "steps": 2},
        finite_float(float, low=0.0)),
    "sharpness_measures": (
        lambda m, d, loss=F.cross_entropy, **kw: sharpness_measures(m, d, loss_fn=loss, **kw),
        {"trace_samples": 2, "ascent_steps": 1},
        lambda r: all(math.isfinite(v) for v in r.as_dict().values()) or pytest.fail(repr(r))),
}
OPTIONS = {
    "hessian_top_eigenvalue": ("tol",),
    "hessian_trace": ("samples",),
    "worst_case_sharpness": ("rho", "eta", "steps", "step_size", "batch_size"),
    "sharpness_measures": ("trace_samples", "rho", "adaptive_rho", "ascent_steps", "m"),
}
NUMERIC_CASES = [(f, o) for f, opts in OPTIONS.items() for o in opts]


@settings(SETTINGS, max_examples=100)
@given(case=st.sampled_from(NUMERIC_CASES), value=NUMBERS)
def test_measurement_options(case: tuple[str, str], value: Any) -> None:
    name, option = case
    fn, kwargs, valid = MEASUREMENTS[name]
    kwargs = {**kwargs, option: value}
    if name == "worst_case_sharpness" and option == "rho" and isinstance(value, float) and value > 1e3:
        kwargs["steps"] = 1
    outcome(lambda: fn(copy.deepcopy(NET), (X, Y), **kwargs), (option,), valid)


@SETTINGS
@given(name=st.sampled_from(sorted(MEASUREMENTS)), mutation=DATA)
def test_measurement_data(name: str, mutation: str) -> None:
    fn, kwargs, valid = MEASUREMENTS[name]
    data = MUTATIONS[mutation](X, Y)
    result = outcome(lambda: fn(copy.deepcopy(NET), data, **kwargs), ("data",), valid)
    assert result is None, f"{mutation} was accepted: {result!r}"


@SETTINGS
@given(name=st.sampled_from(["hessian_top_eigenvalue", "hessian_trace", "worst_case_sharpness"]), which=PARAMS)
def test_measurement_params(name: str, which: str) -> None:
    fn, kwargs, valid = MEASUREMENTS[name]
    model = copy.deepcopy(NET)
    params = bad_params(model)[which]
    result = outcome(lambda: fn(model, (X, Y), params=params, **kwargs), ("params",), valid)
    assert result is None, f"params {which} was accepted"


@SETTINGS
@given(name=st.sampled_from(sorted(MEASUREMENTS)),
       model=st.sampled_from(["nan weight", "inf weight", "not a module", "generator", "loss_fn"]))
def test_measurement_model_and_callables(name: str, model: str) -> None:
    fn, kwargs, valid = MEASUREMENTS[name]
    net = copy.deepcopy(NET)
    expect: tuple[str, ...] = ("model",)
    if model in ("nan weight", "inf weight"):
        with torch.no_grad():
            net[0].weight[0, 0] = math.nan if model == "nan weight" else math.inf
    elif model == "not a module":
        net = lambda x: x  # noqa: E731
    elif model == "generator":
        kwargs = {**kwargs, "generator": 3}
        expect = ("generator",)
    elif model == "loss_fn":
        kwargs = {**kwargs, "loss": "cross-entropy"}
        expect = ("loss_fn",)
    assert outcome(lambda: fn(net, (X, Y), **kwargs), expect, valid) is None, f"{model} was accepted"


# --- the optimizer ----------------------------------------------------------------------------------

def one_step(opt: torch.optim.Optimizer, model: nn.Module) -> torch.Tensor:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(X), Y)
        loss.backward()
        return loss
    return opt.step(closure)


def finite_loss(loss: Any) -> None:
    assert isinstance(loss, torch.Tensor) and bool(torch.isfinite(loss)), loss


@SETTINGS
@given(option=st.sampled_from(["rho", "adaptive_eta", "lr", "momentum", "weight_decay", "adaptive",
                               "ascent_weight_decay"]), value=NUMBERS)
def test_sam_constructor_options(option: str, value: Any) -> None:
    model = copy.deepcopy(NET)
    kwargs: dict[str, Any] = {"lr": 0.1, option: value}
    outcome(lambda: one_step(SAM(model.parameters(), torch.optim.SGD, model=model, **kwargs), model),
            (option,), finite_loss)


@SETTINGS
@given(option=st.sampled_from(["rho", "adaptive_eta", "lr", "momentum", "adaptive"]), value=NUMBERS,
       where=st.sampled_from(["constructor group", "add_param_group"]))
def test_sam_param_group_options(option: str, value: Any, where: str) -> None:
    model = copy.deepcopy(NET)
    first, rest = list(model[0].parameters()), [p for m in list(model)[1:] for p in m.parameters()]

    def build() -> torch.Tensor:
        if where == "constructor group":
            opt = SAM([{"params": first}, {"params": rest, option: value}], torch.optim.SGD, lr=0.1, model=model)
        else:
            opt = SAM(first, torch.optim.SGD, lr=0.1, model=model)
            opt.add_param_group({"params": rest, option: value})
        return one_step(opt, model)

    outcome(build, (option,), finite_loss)


@SETTINGS
@given(kind=st.sampled_from(["sgd", "sam", "asam", "sam-on", "asam-on"]),
       option=st.sampled_from(["lr", "rho", "momentum"]), value=NUMBERS)
def test_make_optimizer_options(kind: str, option: str, value: Any) -> None:
    model = copy.deepcopy(NET)
    kwargs: dict[str, Any] = {"lr": 0.1, option: value}
    outcome(lambda: one_step(make_optimizer(model, kind, **kwargs), model), (option,), finite_loss)


@SETTINGS
@given(value=NUMBERS)
def test_norm_only_sam_rho(value: Any) -> None:
    model = copy.deepcopy(NET)
    outcome(lambda: one_step(norm_only_sam(model, torch.optim.SGD, rho=value, lr=0.1), model), ("rho",),
            finite_loss)


@SETTINGS
@given(value=st.sampled_from(["x", 1, 0.5, torch.zeros(2), nn.Linear, (nn.Linear(1, 1),), NET]))
def test_frozen_running_stats_and_norm_parameters_refuse_non_modules(value: Any) -> None:
    if not isinstance(value, nn.Module):
        with pytest.raises(TypeError, match="model"), frozen_running_stats(value):
            pass
        with pytest.raises(TypeError, match="model"):
            norm_parameters(value)
    with pytest.raises(TypeError, match="types"):
        norm_parameters(NET, types=(value,) if not isinstance(value, type) else ("x",))


# --- train_from ---------------------------------------------------------------------------------------

@SETTINGS
@given(option=st.sampled_from(["lr", "rho", "steps", "batch_size", "stop_loss", "momentum"]), value=NUMBERS)
def test_train_from_options(option: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"lr": 0.1, "steps": 2, option: value}

    def valid(trained: Any) -> None:
        assert all(math.isfinite(v) for v in trained.history.loss)

    # A finite but huge step size makes training diverge: fit stops with a FloatingPointError that says so.
    diverged = (FloatingPointError,) if option in ("lr", "momentum", "rho") else ()
    outcome(lambda: train_from(NET, (X, Y), progress=False, **kwargs), (option, "learning rate"), valid,
            errors=(ValueError, TypeError, *diverged))


@SETTINGS
@given(mutation=DATA, where=st.sampled_from(["data", "test"]))
def test_train_from_data(mutation: str, where: str) -> None:
    bad = MUTATIONS[mutation](X, Y)
    data, test = (bad, (X, Y)) if where == "data" else ((X, Y), bad)
    if mutation == "float targets" and where == "test":
        return  # accuracy compares argmax with float labels 0.0 / 1.0 just as well
    outcome(lambda: train_from(NET, data, test=test, lr=0.1, steps=1, progress=False), (where,),
            lambda r: pytest.fail(f"{mutation} in {where} was accepted"))


# --- label noise and rank correlation -------------------------------------------------------------------

LABELS = {
    "empty": torch.zeros(0, dtype=torch.long), "float": Y.float(), "bool": Y.bool(), "2-D": Y.view(2, 4),
    "negative": Y - 1, "meta": Y.to("meta"), "a list": [0, 1, 2], "0-d": torch.tensor(1),
}


@SETTINGS
@given(which=st.sampled_from(["rate", "num_classes", "labels", "generator"]), value=NUMBERS,
       labels=st.sampled_from(sorted(LABELS)))
def test_noisy_labels(which: str, value: Any, labels: str) -> None:
    y = torch.arange(12) % 3
    kwargs: dict[str, Any] = {"rate": 0.5}
    if which == "labels":
        y = LABELS[labels]
    elif which == "generator":
        kwargs["generator"] = value
    else:
        kwargs[which] = value

    def valid(result: Any) -> None:
        noisy, flipped = result
        assert noisy.shape == y.shape and flipped.shape == y.shape and flipped.dtype == torch.bool
        k = int(y.max()) + 1 if kwargs.get("num_classes") is None else kwargs["num_classes"]
        assert int(noisy.min()) >= 0 and int(noisy.max()) < k

    result = outcome(lambda: noisy_labels(y, **kwargs), (which,), valid)
    if which == "labels":
        assert result is None, f"labels {labels} were accepted"


@SETTINGS
@given(n=st.integers(min_value=0, max_value=6), extra=st.integers(min_value=0, max_value=1), data=st.data())
def test_kendall_tau(n: int, extra: int, data: st.DataObject) -> None:
    a = data.draw(st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True)),
                           min_size=n, max_size=n))
    b = data.draw(st.lists(st.floats(-10, 10), min_size=n + extra, max_size=n + extra))
    def valid(tau: Any) -> None:
        assert isinstance(tau, float) and -1.0 <= tau <= 1.0

    outcome(lambda: kendall_tau(a, b), ("a[", "b[", "a and b"), valid)
    outcome(lambda: kendall_tau(b, a), ("a[", "b[", "a and b"), valid)
