"""Property-based checks of the grokking pillar's public functions (hypothesis, derandomized).

Each example changes one argument of a valid call: a number to NaN/inf/negative/zero/huge/a wrong type, an
operand or label out of range, a tensor to NaN, another dtype or shape, no rows, the meta device, another
model's parameters. The call must either raise a ``ValueError``/``TypeError`` whose message names that
argument, or return a finite result of the documented shape. The maps on the training path (the losses,
StableMax, ``perpendicular_gradient``) may instead return NaN, but only when their input holds one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from labkit.grokking import (
    GrokfastEMA,
    OneHotMLP,
    OneLayerTransformer,
    PerpGrad,
    TwoLayerReLU,
    feature_purity,
    fourier_concentration,
    fourier_power,
    frequency_coverage,
    fresh_model,
    grok_step,
    key_frequencies,
    log_stablemax,
    logistic_loss,
    make_optimizer,
    modular_arithmetic,
    modular_run,
    mse_one_hot_loss,
    nlm_cosine,
    node_frequencies,
    node_spectra,
    parameter_drift,
    perpendicular_gradient,
    plane_decision_maps,
    progress_lead,
    snapshot,
    softmax_collapse_fraction,
    softmax_cross_entropy,
    stablemax,
    stablemax_cross_entropy,
    train_grokking,
    train_xor,
    weight_norm,
    xor_clusters,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

P = 7
SPLIT = modular_arithmetic(P, train_fraction=0.5)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300, -1e-12, 0.5]),
    st.integers(min_value=-3, max_value=6),
    st.sampled_from([True, False, None, "0.1", [0.1]]),
)


def outcome(call: Callable[[], Any], names: tuple[str, ...], valid: Callable[[Any], None]) -> Any:
    """Run ``call``: a ValueError/TypeError must name one of ``names``; a result must pass ``valid``."""
    try:
        result = call()
    except (ValueError, TypeError) as err:
        assert any(n in str(err) for n in names), f"{type(err).__name__} does not name {names}: {err}"
        return None
    valid(result)
    return result


def finite(shape: tuple[int, ...] | None = None) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        t = torch.as_tensor(value, dtype=torch.float64) if not isinstance(value, torch.Tensor) else value
        assert bool(torch.isfinite(t).all()), value
        assert shape is None or tuple(t.shape) == shape, (tuple(t.shape), shape)
    return check


def nan_only_from_nan(inputs: tuple[torch.Tensor, ...]) -> Callable[[Any], None]:
    """A map may return NaN/inf only when one of its inputs holds NaN/inf; a NaN input never comes out as a
    finite value (an infinite logit may: -inf is a masked class)."""
    real = [t for t in inputs if t.is_floating_point() and t.device.type != "meta"]
    has_nan = any(bool(t.isnan().any()) for t in real)
    has_inf = any(bool(t.isinf().any()) for t in real)

    def check(value: torch.Tensor) -> None:
        if has_nan:
            assert not bool(torch.isfinite(value).all()), "a NaN input came out as a finite value"
        elif not has_inf:
            assert bool(torch.isfinite(value).all()), value
    return check


# --- models and operands --------------------------------------------------------------------------

def _pairs(kind: str, low: int, high: int) -> Any:
    x = torch.tensor([[0, 1], [low, high], [P - 1, 0]])
    return {
        "pairs": x, "float": x.float(), "int32": x.int(), "one column": x[:, :1],
        "three columns": torch.cat([x, x[:, :1]], 1),
        "1-d": x[0], "empty": x[:0], "meta": x.to("meta"), "list": x.tolist(),
    }[kind]


MODELS = {"mlp": lambda: OneHotMLP(P, hidden=(6,)),
          "transformer": lambda: OneLayerTransformer(P, d_model=4, n_heads=2, d_mlp=4)}


@SETTINGS
@given(name=st.sampled_from(sorted(MODELS)), kind=st.sampled_from(["pairs"] * 4 + ["float", "int32", "one column",
       "three columns", "1-d", "empty", "meta", "list"]),
       low=st.integers(-3, P + 3), high=st.integers(-3, 2 * P + 2))
def test_model_operands(name: str, kind: str, low: int, high: int) -> None:
    model = MODELS[name]()
    x = _pairs(kind, low, high)
    result = outcome(lambda: model(x), ("x",), finite())
    in_range = kind == "pairs" and 0 <= low < P and 0 <= high < P
    if in_range or kind == "empty":
        assert result is not None and result.shape == (x.shape[0], P)
    else:
        assert result is None, f"{kind} ({low}, {high}) was accepted"


CONSTRUCTORS = {
    "OneHotMLP.p": lambda v: OneHotMLP(v, hidden=(4,)),
    "OneHotMLP.hidden": lambda v: OneHotMLP(P, hidden=(v,)),
    "OneHotMLP.out": lambda v: OneHotMLP(P, hidden=(4,), out=v),
    "OneLayerTransformer.p": lambda v: OneLayerTransformer(v, d_model=4, n_heads=2, d_mlp=4),
    "OneLayerTransformer.d_model": lambda v: OneLayerTransformer(P, d_model=v, n_heads=1, d_mlp=4),
    "OneLayerTransformer.n_heads": lambda v: OneLayerTransformer(P, d_model=4, n_heads=v, d_mlp=4),
    "OneLayerTransformer.d_mlp": lambda v: OneLayerTransformer(P, d_model=4, n_heads=2, d_mlp=v),
    "TwoLayerReLU.in_features": lambda v: TwoLayerReLU(v, 4),
    "TwoLayerReLU.width": lambda v: TwoLayerReLU(3, v),
    "TwoLayerReLU.init_scale": lambda v: TwoLayerReLU(3, 4, init_scale=v),
    "fresh_model.p": lambda v: fresh_model(v, seed=0, hidden=(4,)),
    "fresh_model.seed": lambda v: fresh_model(P, seed=v, hidden=(4,)),
}


@settings(SETTINGS, max_examples=150)
@given(case=st.sampled_from(sorted(CONSTRUCTORS)), value=NUMBERS)
def test_model_options(case: str, value: Any) -> None:
    option = case.split(".")[1]

    def valid(model: nn.Module) -> None:
        assert isinstance(model, nn.Module)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())

    outcome(lambda: CONSTRUCTORS[case](value), (option,), valid)


# --- data ------------------------------------------------------------------------------------------

DATA_OPTIONS = {
    "modular_arithmetic.p": lambda v: modular_arithmetic(v),
    "modular_arithmetic.train_fraction": lambda v: modular_arithmetic(5, train_fraction=v),
    "modular_arithmetic.seed": lambda v: modular_arithmetic(5, seed=v),
    "xor_clusters.n_train": lambda v: xor_clusters(v, 8, dim=3),
    "xor_clusters.n_test": lambda v: xor_clusters(8, v, dim=3),
    "xor_clusters.dim": lambda v: xor_clusters(8, 8, dim=v),
    "xor_clusters.signal": lambda v: xor_clusters(8, 8, dim=3, signal=v),
    "xor_clusters.noise_rate": lambda v: xor_clusters(8, 8, dim=3, noise_rate=v),
    "xor_clusters.seed": lambda v: xor_clusters(8, 8, dim=3, seed=v),
}


@settings(SETTINGS, max_examples=150)
@given(case=st.sampled_from(sorted(DATA_OPTIONS)), value=NUMBERS)
def test_data_options(case: str, value: Any) -> None:
    option = case.split(".")[1]

    def valid(split: Any) -> None:
        for t in (split.train_x, split.train_y, split.test_x, split.test_y):
            assert t.shape[0] > 0
            assert bool(torch.isfinite(t.double()).all())

    outcome(lambda: DATA_OPTIONS[case](value), (option,), valid)


def _split_mutation(kind: str, shift: int) -> Any:
    s = SPLIT
    return {
        "as made": s,
        "operands shifted": dataclasses.replace(s, train_x=s.train_x + shift),
        "labels shifted": dataclasses.replace(s, test_y=s.test_y + shift),
        "another p": dataclasses.replace(s, p=P + shift),
        "no training rows": dataclasses.replace(s, train_x=s.train_x[:0], train_y=s.train_y[:0]),
        "float operands": dataclasses.replace(s, train_x=s.train_x.float()),
        "fewer labels": dataclasses.replace(s, train_y=s.train_y[:-1]),
        "meta": dataclasses.replace(s, test_x=s.test_x.to("meta")),
    }[kind]


@settings(SETTINGS, max_examples=60)
@given(kind=st.sampled_from(["as made", "operands shifted", "labels shifted", "another p", "no training rows",
                             "float operands", "fewer labels", "meta"]),
       shift=st.sampled_from([-P, -1, 1, 3]), entry=st.sampled_from(["modular_run", "train_grokking"]))
def test_modular_data(kind: str, shift: int, entry: str) -> None:
    data = _split_mutation(kind, shift)

    def call() -> Any:
        if entry == "modular_run":
            return modular_run(data, seed=0, steps=1, hidden=(4,), progress=False)
        model = OneHotMLP(P, hidden=(4,))
        return train_grokking(model, data, optimizer=make_optimizer(model), steps=1, progress=False)

    result = outcome(call, ("data",), lambda r: finite()(r.history["train_acc"]))
    if kind != "as made":
        assert result is None, f"{kind} (shift {shift}) was accepted by {entry}"


# --- optimizers ------------------------------------------------------------------------------------

OPTIMIZERS = {
    "GrokfastEMA": lambda prm, **kw: GrokfastEMA(prm, torch.optim.AdamW, **kw),
    "PerpGrad": lambda prm, **kw: PerpGrad(prm, torch.optim.AdamW, **kw),
    "PerpGrad(SGD)": lambda prm, **kw: PerpGrad(prm, torch.optim.SGD, **{"lr": 0.1, **kw}),
    "make_optimizer(grokfast_adamw)": lambda prm, **kw: make_optimizer(prm, "grokfast_adamw", **kw),
    "make_optimizer(adamw)": lambda prm, **kw: make_optimizer(prm, "adamw", **kw),
    "make_optimizer(sgd)": lambda prm, **kw: make_optimizer(prm, "sgd", **kw),
}
HYPER = {
    "GrokfastEMA": ("lr", "weight_decay", "eps", "ema_alpha", "ema_lamb"),
    "PerpGrad": ("lr", "weight_decay", "eps"),
    "PerpGrad(SGD)": ("lr", "weight_decay", "momentum", "dampening"),
    "make_optimizer(grokfast_adamw)": ("lr", "weight_decay", "eps", "ema_alpha", "ema_lamb"),
    "make_optimizer(adamw)": ("lr", "weight_decay", "eps"),
    "make_optimizer(sgd)": ("lr", "weight_decay", "momentum"),
}
HYPER_CASES = [(name, option) for name, options in HYPER.items() for option in options]


@settings(SETTINGS, max_examples=200)
@given(case=st.sampled_from(HYPER_CASES), value=NUMBERS, in_group=st.booleans())
def test_optimizer_hyper_parameters(case: tuple[str, str], value: Any, in_group: bool) -> None:
    name, option = case
    model = nn.Linear(3, 2)
    torch.manual_seed(0)
    x = torch.randn(5, 3)

    def call() -> Any:
        if name.startswith("make_optimizer"):
            opt = OPTIMIZERS[name](model, **{option: value})
        elif in_group and option not in ("ema_alpha", "ema_lamb"):
            opt = OPTIMIZERS[name]([{"params": model.parameters(), option: value}])
        else:
            opt = OPTIMIZERS[name](model.parameters(), **{option: value})
        for _ in range(2):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        return [p.detach() for p in model.parameters()]

    # a huge finite lr or ema_lamb is accepted and may overflow: fit's on_nonfinite is the guard for that
    huge = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > 1e6
    outcome(call, (option,), lambda params: huge or all(finite()(p) is None for p in params))


@settings(SETTINGS, max_examples=40)
@given(value=NUMBERS, option=st.sampled_from(["lr", "weight_decay", "betas"]),
       cls=st.sampled_from([GrokfastEMA, PerpGrad]))
def test_add_param_group(value: Any, option: str, cls: type) -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt = cls(a.parameters(), lr=1e-3)
    value = (value, 0.9) if option == "betas" else value
    result = outcome(lambda: opt.add_param_group({"params": list(b.parameters()), option: value}), (option,),
                     lambda r: None)
    assert len(opt.param_groups) == len(opt.base_optimizer.param_groups) == (1 if result is None and
                                                                               _refused(option, value) else 2)


def _refused(option: str, value: Any) -> bool:
    try:
        from labkit.grokking.optim import check_hyperparameters
        check_hyperparameters({option: value})
    except (TypeError, ValueError):
        return True
    return False


@SETTINGS
@given(shape=st.sampled_from([(3, 2), (6,), (2, 3)]), dtype=st.sampled_from([torch.float32, torch.float64, torch.long]),
       poison=st.sampled_from([None, math.nan, math.inf]), meta=st.booleans())
def test_perpendicular_gradient(shape: tuple[int, ...], dtype: torch.dtype, poison: float | None, meta: bool) -> None:
    w = torch.randn(3, 2)
    g = torch.randn(shape).to(dtype)
    if poison is not None and g.is_floating_point():
        g.view(-1)[0] = poison
    if meta:
        g = g.to("meta")
    result = outcome(lambda: perpendicular_gradient(w, g), ("grad",), nan_only_from_nan((g,)) if not meta else
                     lambda r: None)
    if shape != (3, 2) or dtype != torch.float32 or meta:
        assert result is None


# --- losses and StableMax ---------------------------------------------------------------------------

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse_one_hot_loss": mse_one_hot_loss,
}


def _logits(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=g)
    if kind in ("nan", "inf", "-inf"):
        z[1, 2] = float(kind)
    return {"plain": z, "nan": z, "inf": z, "-inf": z, "long": z.long(), "1-d": z[0], "empty": z[:0],
            "meta": z.to("meta"), "float64": z.double(), "no classes": z[:, :0]}[kind]


@settings(SETTINGS, max_examples=150)
@given(name=st.sampled_from(sorted(LOSSES)),
       logits=st.sampled_from(["plain", "nan", "inf", "-inf", "long", "1-d", "empty", "meta", "float64",
                               "no classes"]),
       target=st.sampled_from(["ok", "too large", "negative", "float", "short", "meta"]),
       reduction=st.sampled_from(["mean", "sum", "none", "avg"]))
def test_losses(name: str, logits: str, target: str, reduction: str) -> None:
    z = _logits(logits)
    y = {"ok": torch.tensor([0, 1, 2, 0]), "too large": torch.tensor([0, 1, 3, 0]),
         "negative": torch.tensor([0, -1, 2, 0]),
         "float": torch.tensor([0.0, 1, 2, 0]), "short": torch.tensor([0, 1, 2]),
         "meta": torch.tensor([0, 1, 2, 0], device="meta")}[target]
    if logits == "empty":
        y = y[:0]
    names = ("logits", "target", "reduction")
    result = outcome(lambda: LOSSES[name](z, y, reduction=reduction), names, nan_only_from_nan((z,)))
    if target != "ok" or reduction == "avg" or logits in ("long", "1-d", "empty", "meta", "no classes"):
        assert result is None, (logits, target, reduction)


@SETTINGS
@given(fn=st.sampled_from([stablemax, log_stablemax]),
       logits=st.sampled_from(["plain", "nan", "inf", "-inf", "long", "meta", "float64", "1-d"]),
       dim=st.sampled_from([-1, 0, 1, 2, -3, 0.5]))
def test_stablemax_maps(fn: Callable[..., torch.Tensor], logits: str, dim: Any) -> None:
    z = _logits(logits)
    result = outcome(lambda: fn(z, dim=dim), ("logits", "dim"), nan_only_from_nan((z,)))
    if result is not None:
        assert result.shape == z.shape


@settings(SETTINGS, max_examples=150)
@given(name=st.sampled_from(["logistic_loss", "softmax_collapse_fraction"]),
       logits=st.sampled_from(["plain", "nan", "inf", "long", "empty", "meta", "1-d"]),
       target=st.sampled_from(["ok", "too large", "short"]))
def test_collapse_fraction_and_logistic_loss(name: str, logits: str, target: str) -> None:
    z = _logits(logits)
    if name == "softmax_collapse_fraction":
        y = {"ok": torch.tensor([0, 1, 2, 0]), "too large": torch.tensor([0, 1, 3, 0]),
             "short": torch.tensor([0, 1])}[target]
        y = y[: z.shape[0]] if logits == "empty" else y
        result = outcome(lambda: softmax_collapse_fraction(z, y), ("logits", "target"),
                         lambda r: finite()(r) or (0.0 <= r <= 1.0) or None)
        if logits != "plain" or target != "ok":
            assert result is None, (logits, target)
        return
    s = z[:, 0] if z.ndim == 2 else z
    y = {"ok": torch.tensor([1.0, -1, 1, -1]), "too large": torch.tensor([2.0, -1, 1, -1]),
         "short": torch.tensor([1.0])}[target]
    y = y[: s.shape[0]] if logits == "empty" else y
    outcome(lambda: logistic_loss(s, y), ("scores", "y"), nan_only_from_nan((s,)))


# --- progress measures ------------------------------------------------------------------------------

EMBEDDINGS = {
    "(p, d)": lambda: torch.randn(P, 3), "(m, p, d)": lambda: torch.randn(2, P, 3), "nan": lambda: _poison(math.nan),
    "inf": lambda: _poison(math.inf), "1-d": lambda: torch.randn(P), "4-d": lambda: torch.randn(1, 2, P, 3),
    "empty": lambda: torch.randn(P, 0), "one residue": lambda: torch.randn(1, 3),
    "meta": lambda: torch.randn(P, 3, device="meta"),
    "complex": lambda: torch.randn(P, 3, dtype=torch.complex64), "list": lambda: [[0.0] * 3] * P,
}


def _poison(value: float) -> torch.Tensor:
    e = torch.randn(2, P, 3)
    e[1, 2, 0] = value
    return e


FOURIER: dict[str, tuple[Callable[..., Any], tuple[int, ...] | None]] = {
    "fourier_power": (fourier_power, (P // 2 + 1,)), "fourier_concentration": (fourier_concentration, ()),
    "key_frequencies": (key_frequencies, None), "node_spectra": (node_spectra, (3, P // 2)),
    "feature_purity": (feature_purity, ()), "node_frequencies": (node_frequencies, (3,)),
    "frequency_coverage": (frequency_coverage, (P // 2,)),
}


@settings(SETTINGS, max_examples=150)
@given(name=st.sampled_from(sorted(FOURIER)), kind=st.sampled_from(sorted(EMBEDDINGS)),
       top_k=st.one_of(st.integers(-1, 5), st.sampled_from([1.5, True, None, math.nan])))
def test_fourier_measures(name: str, kind: str, top_k: Any) -> None:
    fn, shape = FOURIER[name]
    e = EMBEDDINGS[kind]()
    extra = {"top_k": top_k} if name in ("fourier_concentration", "key_frequencies") else {}
    result = outcome(lambda: fn(e, **extra), ("embedding", "top_k"), finite(shape))
    if kind not in ("(p, d)", "(m, p, d)"):
        assert result is None, kind


@SETTINGS
@given(which=st.sampled_from(["train_threshold", "test_threshold", "below"]), value=NUMBERS,
       column=st.sampled_from(["ok", "missing", "nan"]))
def test_history_summaries(which: str, value: Any, column: str) -> None:
    history = {"step": [0, 10, 20], "train_acc": [0.1, 1.0, 1.0], "test_acc": [0.0, 0.05, 0.97],
               "fourier_conc": [0.1, 0.4, 0.9]}
    if column == "nan":
        history["test_acc"] = [0.0, math.nan, 0.97]
    test = "test_acc" if column != "missing" else "test_accuracy"
    if which == "below":
        call = lambda: progress_lead(history, "fourier_conc", test=test, below=value)  # noqa: E731
        valid = finite()
    else:
        call = lambda: grok_step(history, test=test, **{which: value})  # noqa: E731
        valid = lambda s: None  # noqa: E731 - GrokSummary: steps or None
    outcome(call, (which, "test"), valid)


BUSY = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
OTHER = nn.Linear(3, 2)


@SETTINGS
@given(case=st.sampled_from(["own", "foreign", "mixed", "empty", "not a module", "nan loss", "loss tensor",
                             "loss not scalar", "loss a number"]))
def test_nlm_cosine(case: str) -> None:
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    loss = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    kwargs: dict[str, Any] = {}
    model: Any = BUSY
    if case == "foreign":
        kwargs["params"] = list(OTHER.parameters())
    elif case == "mixed":
        kwargs["params"] = [BUSY[0].weight, OTHER.weight]
    elif case == "empty":
        kwargs["params"] = []
    elif case == "not a module":
        model = lambda z: z  # noqa: E731
    elif case == "nan loss":
        loss = lambda m: m(x).sum() * math.nan  # noqa: E731
    elif case == "loss tensor":
        loss = nn.functional.cross_entropy(BUSY(x), y)
    elif case == "loss not scalar":
        loss = lambda m: m(x)  # noqa: E731
    elif case == "loss a number":
        loss = 1.0
    result = outcome(lambda: nlm_cosine(model, loss, **kwargs), ("model", "params", "loss"),
                     lambda r: finite()(r) or (-1.0 - 1e-6 <= r <= 1.0 + 1e-6) or None)
    if case not in ("own", "loss tensor"):
        assert result is None, case


@SETTINGS
@given(case=st.sampled_from(["same", "other architecture", "nan reference", "missing name", "string names",
                             "empty names", "not a mapping", "int tensor"]))
def test_parameter_drift_and_weight_norm(case: str) -> None:
    model = nn.Linear(3, 2)
    ref: Any = snapshot(model)
    names: Any = None
    if case == "other architecture":
        ref = snapshot(nn.Linear(4, 2))
    elif case == "nan reference":
        ref["weight"][0, 0] = math.nan
    elif case == "missing name":
        names = ["weight", "gamma"]
    elif case == "string names":
        names = "weight"
    elif case == "empty names":
        names = []
    elif case == "not a mapping":
        ref = list(ref.values())
    elif case == "int tensor":
        ref["bias"] = torch.tensor([1, 2])
    result = outcome(lambda: parameter_drift(model, ref, names=names), ("reference", "names", "parameter names"),
                     finite(()))
    if case not in ("same", "int tensor"):
        assert result is None, case
    # weight_norm carries a NaN weight to a NaN norm (a diverged run's norm); otherwise finite
    params = [model.weight] if case == "same" else list(ref.values()) if isinstance(ref, dict) else "w"
    outcome(lambda: weight_norm(params), ("model",),
            lambda r: (math.isnan(r) if case == "nan reference" else math.isfinite(r)) or pytest.fail(repr(r)))


# --- the XOR experiment -----------------------------------------------------------------------------

XOR = xor_clusters(8, 8, dim=3)


@SETTINGS
@given(case=st.sampled_from(["ok", "float64 data", "nan data", "other dim", "no rows", "lr", "steps",
                             "eval_steps", "x int", "x meta", "x wrong features", "x float64"]),
       value=NUMBERS)
def test_xor_experiment(case: str, value: Any) -> None:
    model = TwoLayerReLU(3, 4)
    data, kwargs, names = XOR, {"steps": 2}, ("data",)
    if case == "float64 data":
        data = dataclasses.replace(XOR, train_x=XOR.train_x.double())
    elif case == "nan data":
        data = dataclasses.replace(XOR, test_x=XOR.test_x.clone().fill_(math.nan))
    elif case == "other dim":
        data = xor_clusters(8, 8, dim=4)
    elif case == "no rows":
        data = dataclasses.replace(XOR, train_x=XOR.train_x[:0], train_y=XOR.train_y[:0])
    elif case in ("lr", "steps"):
        kwargs, names = {"steps": 2, case: value}, (case,)
    elif case == "eval_steps":
        kwargs, names = {"steps": 2, "eval_steps": [0, value]}, ("eval_steps",)
    if case.startswith("x "):
        x = {"x int": XOR.test_x.long(), "x meta": XOR.test_x.to("meta"), "x wrong features": XOR.test_x[:, :2],
             "x float64": XOR.test_x.double()}[case]
        result = outcome(lambda: model(x), ("x",), finite((8,)))
        assert result is None
        return
    result = outcome(lambda: train_xor(model, data, progress=False, **kwargs), names,
                     lambda h: finite()(h.loss))
    if case in ("float64 data", "nan data", "other dim", "no rows"):
        assert result is None, case


@SETTINGS
@given(case=st.sampled_from(["ok", "nan basis", "basis (d, 3)", "nan grid", "2-d grid", "empty grid",
                             "grid float64", "wrong weight", "no a", "not a mapping"]))
def test_plane_decision_maps(case: str) -> None:
    model = TwoLayerReLU(3, 4)
    basis, grid = XOR.plane_basis(), torch.linspace(-1, 1, 5)
    snaps: Any = {0: model.state_dict()}
    if case == "nan basis":
        basis = basis.clone()
        basis[0, 0] = math.nan
    elif case == "basis (d, 3)":
        basis = torch.eye(3)
    elif case == "nan grid":
        grid = grid.clone()
        grid[1] = math.nan
    elif case == "2-d grid":
        grid = grid[None]
    elif case == "empty grid":
        grid = grid[:0]
    elif case == "grid float64":
        grid = grid.double()
    elif case == "wrong weight":
        snaps = {0: {"weight": torch.randn(4, 5), "a": torch.ones(4)}}
    elif case == "no a":
        snaps = {0: {"weight": torch.randn(4, 3)}}
    elif case == "not a mapping":
        snaps = [model.state_dict()]
    result = outcome(lambda: plane_decision_maps(snaps, basis, grid), ("basis", "grid", "snapshots"),
                     lambda maps: finite((5, 5))(maps[0]))
    if case != "ok":
        assert result is None, case
