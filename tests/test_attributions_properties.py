"""Property-based checks of the attributions pillar's public functions (hypothesis, derandomized).

Each example changes one argument of a valid call: a number to NaN/inf/negative/zero/huge/a wrong type, the
input to NaN, another dtype, another channel count, no channel dimension, no rows, the meta device; the
target out of range; a baseline, fill or attribution tensor to NaN / the meta device / a wrong shape; a layer
to a foreign one; an explainer to one of the wrong signature. The call must either raise a
``ValueError``/``TypeError`` whose message names that argument, or return a finite result of the
documented shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from labkit.attributions import (
    Curve,
    IGResult,
    LayerGrad,
    combine_layer_maps,
    conservation_error,
    deletion_curve,
    feature_order,
    gini_index,
    grad_cam,
    grad_cam_pp,
    ig_points,
    infidelity,
    input_x_gradient,
    insertion_curve,
    instability,
    integrated_gradients,
    integrated_gradients_with_delta,
    layer_activation_and_grad,
    layer_maps,
    map_correlation,
    max_min_class_correlation,
    max_sensitivity,
    noise_scale,
    norm_grad,
    pgd_perturb,
    pointing_game,
    remove_features,
    roar,
    saliency,
    smooth_grad_cam_pp,
    smoothgrad,
    xgrad_cam,
)
from labkit.attributions.data import block_digits, null_patch, two_digit_canvas
from labkit.attributions.experiments import adversarial_loss, explainer, fit_classifier, train_mlp

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU()),
        nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Softplus()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(3, 3),
    )
    with torch.no_grad():  # BatchNorm statistics that are not the defaults
        net[0][1].running_mean.uniform_(-0.2, 0.2)
        net[0][1].running_var.uniform_(0.5, 1.5)
    return net.eval()


NET = make_cnn()
LAYER = NET[1]
X = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))
T = torch.tensor([0, 2, 1])
C = 3
OTHER = nn.Sequential(nn.Conv2d(1, 2, 3))

# Numbers that are wrong somewhere: NaN, infinities, negatives, zero, huge, bools, strings, None.
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300, 1e39, -1e-12, 0.5]),
    st.integers(min_value=-3, max_value=5),
    st.sampled_from([True, False, None, "0.1", [0.1], torch.tensor(math.nan)]),
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


def finite(shape: tuple[int, ...]) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        assert isinstance(out, torch.Tensor), type(out)
        assert tuple(out.shape) == shape, (tuple(out.shape), shape)
        assert bool(torch.isfinite(out).all()), out
    return check


def like_x(x: torch.Tensor) -> Callable[[Any], None]:
    return finite(tuple(x.shape))


def maps_of(x: torch.Tensor) -> Callable[[Any], None]:
    return finite((x.shape[0], *x.shape[2:]))


def per_example(x: torch.Tensor) -> Callable[[Any], None]:
    return finite((x.shape[0],))


def ig_result(x: torch.Tensor) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        assert isinstance(out, IGResult)
        like_x(x)(out.attributions)
        per_example(x)(out.delta)
    return check


def layer_grad(x: torch.Tensor) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        assert isinstance(out, LayerGrad)
        finite((x.shape[0], 3, *x.shape[2:]))(out.activations)
        finite((x.shape[0], 3, *x.shape[2:]))(out.gradient)
        per_example(x)(out.scores)
    return check


def curve(x: torch.Tensor, steps: int = 4) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        assert isinstance(out, Curve)
        finite((x.shape[0], steps + 1))(out.scores)
        per_example(x)(out.auc)
    return check


def explain_saliency(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return saliency(NET, x, t)


def pixel_model(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)[:, :C] * 3.0


def retrain(x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return pixel_model


def _like(x: Any) -> Any:
    """Attributions for ``x``: valid ones where ``x`` is a real tensor (so that only ``x`` is wrong)."""
    if isinstance(x, torch.Tensor) and x.device.type != "meta" and x.is_floating_point():
        return torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    return X


# name -> (call(model, x, target, **options), default options, validator of the result for that x)
CALLS: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[[torch.Tensor], Callable[[Any], None]]]] = {
    "saliency": (saliency, {}, like_x),
    "input_x_gradient": (input_x_gradient, {}, like_x),
    "smoothgrad": (smoothgrad, {"samples": 3, "generator": torch.Generator().manual_seed(0)}, like_x),
    "integrated_gradients": (integrated_gradients, {"steps": 4}, like_x),
    "integrated_gradients_with_delta": (integrated_gradients_with_delta, {"steps": 4}, ig_result),
    "layer_activation_and_grad": (layer_activation_and_grad, {"layer": LAYER}, layer_grad),
    "grad_cam": (grad_cam, {"layer": LAYER}, maps_of),
    "grad_cam_pp": (grad_cam_pp, {"layer": LAYER}, maps_of),
    "smooth_grad_cam_pp": (smooth_grad_cam_pp, {"layer": LAYER, "samples": 2}, maps_of),
    "xgrad_cam": (xgrad_cam, {"layer": LAYER}, maps_of),
    "norm_grad": (norm_grad, {"layer": LAYER}, maps_of),
    "conservation_error": (conservation_error, {"layer": LAYER, "method": xgrad_cam}, per_example),
    "infidelity": (lambda m, x, t, **kw: infidelity(m, x, _like(x), t, **kw), {"samples": 3}, per_example),
    "deletion_curve": (lambda m, x, t, **kw: deletion_curve(m, x, _like(x), t, **kw), {"steps": 4}, curve),
    "insertion_curve": (lambda m, x, t, **kw: insertion_curve(m, x, _like(x), t, **kw), {"steps": 4}, curve),
    "pgd_perturb": (pgd_perturb, {"eps": 0.1, "steps": 2}, like_x),
    "max_sensitivity": (lambda m, x, t, **kw: max_sensitivity(explain_saliency, x, t, **kw), {"samples": 2},
                        per_example),
}
TARGET_NAME = {"pgd_perturb": "y"}

# (call, option) pairs; each numeric option is set to a value from NUMBERS.
NUMERIC = [
    ("smoothgrad", "samples"), ("smoothgrad", "noise"), ("smoothgrad", "chunk_size"), ("smoothgrad", "kind"),
    ("integrated_gradients", "steps"), ("integrated_gradients", "baseline"), ("integrated_gradients", "chunk_size"),
    ("integrated_gradients", "rule"), ("integrated_gradients_with_delta", "baseline"),
    ("grad_cam_pp", "vmap_chunk"), ("grad_cam", "relu"), ("xgrad_cam", "upsample"),
    ("smooth_grad_cam_pp", "samples"), ("smooth_grad_cam_pp", "noise"),
    ("infidelity", "samples"), ("infidelity", "noise"), ("infidelity", "chunk_size"),
    ("deletion_curve", "steps"), ("deletion_curve", "baseline"), ("insertion_curve", "baseline"),
    ("pgd_perturb", "eps"), ("pgd_perturb", "steps"), ("pgd_perturb", "step_size"),
    ("max_sensitivity", "radius"), ("max_sensitivity", "samples"),
]


@settings(SETTINGS, max_examples=300)
@given(case=st.sampled_from(NUMERIC), value=NUMBERS)
def test_numeric_options(case: tuple[str, str], value: Any) -> None:
    name, option = case
    fn, kwargs, valid = CALLS[name]
    kwargs = {**kwargs, option: value}
    if name == "deletion_curve" and option == "steps" and isinstance(value, int) and value > 0:
        valid = lambda x: curve(x, value)  # noqa: E731
    outcome(lambda: fn(NET, X, T, **kwargs), (option,), valid(X))


# Numbers of the functions without a model.
def _option_calls() -> dict[str, Callable[[Any], Any]]:
    attr = X.clone()
    return {
        "noise_scale.noise": lambda v: noise_scale(X, v),
        "ig_points.steps": lambda v: ig_points(v, "riemann_middle"),
        "remove_features.fraction": lambda v: remove_features(X, attr, v),
        "remove_features.fill": lambda v: remove_features(X, attr, 0.5, fill=v),
        "map_correlation.rtol": lambda v: map_correlation(X[:, 0], X[:, 0].flip(1), rtol=v),
        "pgd_perturb.clamp[0]": lambda v: pgd_perturb(NET, X, T, eps=0.1, steps=1, clamp=(v, 1.0)),
        "pgd_perturb.clamp[1]": lambda v: pgd_perturb(NET, X, T, eps=0.1, steps=1, clamp=(0.0, v)),
        "roar.fractions[0]": lambda v: roar(retrain, X, T, X, T, attr, attr, fractions=[v]),
        "roar.fill": lambda v: roar(retrain, X, T, X, T, attr, attr, fractions=[0.2], fill=v),
        "null_patch.value": lambda v: null_patch(v),
        "adversarial_loss.eps": lambda v: adversarial_loss(eps=v, steps=1)(NET, (X, T)),
        "adversarial_loss.steps": lambda v: adversarial_loss(eps=0.1, steps=v)(NET, (X, T)),
        "block_digits.patch_value": lambda v: block_digits(patch_value=v).train_x,
        "block_digits.test_fraction": lambda v: block_digits(test_fraction=v).test_x,
        "block_digits.seed": lambda v: block_digits(seed=v).test_x,
        "two_digit_canvas.n": lambda v: two_digit_canvas(v).images,
        "two_digit_canvas.seed": lambda v: two_digit_canvas(2, seed=v).images,
        "fit_classifier.lr": lambda v: fit_classifier(make_cnn(), X, T, steps=1, lr=v, progress=False)(X),
        "fit_classifier.steps": lambda v: fit_classifier(make_cnn(), X, T, steps=v, progress=False)(X),
        "train_mlp.classes": lambda v: train_mlp(X.flatten(1), T, hidden=[2], classes=v, steps=1)(X.flatten(1)),
        "train_mlp.hidden[0]": lambda v: train_mlp(X.flatten(1), T, hidden=[v], classes=3, steps=1)(X.flatten(1)),
    }


OPTION_CALLS = _option_calls()


def _valid_any(out: Any) -> None:
    tensors = [out] if isinstance(out, torch.Tensor) else [v for v in getattr(out, "__dict__", {}).values()
                                                             if isinstance(v, torch.Tensor)]
    if isinstance(out, tuple):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
    for t in tensors:
        assert bool(torch.isfinite(t).all()) or t.dtype == torch.bool, out
    if hasattr(out, "accuracy"):
        assert all(0.0 <= a <= 1.0 for a in out.accuracy)


@settings(SETTINGS, max_examples=200)
@given(case=st.sampled_from(sorted(OPTION_CALLS)), value=NUMBERS)
def test_options_without_a_model(case: str, value: Any) -> None:
    option = case.split(".", 1)[1]
    outcome(lambda: OPTION_CALLS[case](value), (option, option.split("[")[0]), _valid_any)


# --- the input x ------------------------------------------------------------------------------------

def _nan_at(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x[1, 0, 2, 3] = value
    return x


X_MUTATIONS: dict[str, Callable[[torch.Tensor], Any]] = {
    "nan": lambda x: _nan_at(x, math.nan),
    "inf": lambda x: _nan_at(x, math.inf),
    "-inf": lambda x: _nan_at(x, -math.inf),
    "float64": lambda x: x.double(),
    "float16": lambda x: x.half(),
    "integer": lambda x: (x * 10).long(),
    "bool": lambda x: x > 0.5,
    "complex": lambda x: x.to(torch.complex64),
    "two channels": lambda x: torch.cat([x, x], 1),
    "no channel dimension": lambda x: x[:, 0],
    "one image without channels": lambda x: x[:1, 0],
    "no batch dimension": lambda x: x[0],
    "a vector": lambda x: x[0, 0, 0],
    "a scalar": lambda x: x[0, 0, 0, 0],
    "no rows": lambda x: x[:0],
    "meta": lambda x: x.to("meta"),
    "numpy": lambda x: x.numpy(),
    "list": lambda x: x.tolist(),
    "None": lambda x: None,
}
ACCEPTED_SHAPES = {"other spatial size": lambda x: x[:, :, :4, :3]}  # global pooling takes any size


@settings(SETTINGS, max_examples=400)
@given(name=st.sampled_from(sorted(CALLS)), mutation=st.sampled_from(sorted(X_MUTATIONS)))
def test_bad_inputs_are_refused(name: str, mutation: str) -> None:
    fn, kwargs, valid = CALLS[name]
    x = X_MUTATIONS[mutation](X)
    result = outcome(lambda: fn(NET, x, 0, **kwargs), ("x",), lambda out: None)
    assert result is None, f"{name} accepted x with {mutation}"


@SETTINGS
@given(name=st.sampled_from(sorted(CALLS)))
def test_other_image_sizes_give_results_of_their_shape(name: str) -> None:
    fn, kwargs, valid = CALLS[name]
    x = ACCEPTED_SHAPES["other spatial size"](X)
    outcome(lambda: fn(NET, x, T, **kwargs), ("x",), valid(x))


@SETTINGS
@given(name=st.sampled_from(sorted(CALLS)),
       values=st.lists(st.floats(min_value=-1e3, max_value=1e3, width=32), min_size=75, max_size=75))
def test_valid_inputs_give_finite_results(name: str, values: list[float]) -> None:
    fn, kwargs, valid = CALLS[name]
    x = torch.tensor(values, dtype=torch.float32).reshape(3, 1, 5, 5)
    if name == "pgd_perturb":
        kwargs = {**kwargs, "clamp": None}
    valid(x)(fn(NET, x, T, **kwargs))


# --- the target -------------------------------------------------------------------------------------

TARGETS: dict[str, Any] = {
    "class C": C,
    "class C in a tensor": torch.tensor([0, C, 1]),
    "negative": -1,
    "negative in a tensor": torch.tensor([0, -2, 1]),
    "float tensor": T.float(),
    "bool tensor": T.bool(),
    "a float": 1.5,
    "a bool": True,
    "a string": "0",
    "None": None,
    "too few": T[:2],
    "2-D": T[:, None],
    "meta": T.to("meta"),
    "a list": [0, 1, 2],
}


@settings(SETTINGS, max_examples=300)
@given(name=st.sampled_from(sorted(CALLS)), which=st.sampled_from(sorted(TARGETS)))
def test_bad_targets_are_refused(name: str, which: str) -> None:
    fn, kwargs, _ = CALLS[name]
    target_name = TARGET_NAME.get(name, "target")
    result = outcome(lambda: fn(NET, X, TARGETS[which], **kwargs), (target_name,), lambda out: None)
    assert result is None, f"{name} accepted target {which}"


# --- tensors other than x: baselines, attributions, maps, masks ----------------------------------------

def _tensor_mutations(like: torch.Tensor) -> dict[str, Any]:
    return {
        "nan": _nan_at(like, math.nan) if like.ndim == 4 else like.clone().fill_(math.nan),
        "inf": like.clone().fill_(math.inf),
        "meta": like.to("meta"),
        "wrong shape": like[:, :, :2],
        "numpy": like.numpy(),
        "bool": like > 0.5,
        "a string": "zeros",
    }


BAD_TENSORS = sorted(_tensor_mutations(X))
TENSOR_ARGS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "integrated_gradients.baseline": (lambda b: integrated_gradients(NET, X, T, baseline=b, steps=3), ("baseline",)),
    "deletion_curve.baseline": (lambda b: deletion_curve(NET, X, X, T, baseline=b, steps=3), ("baseline",)),
    "insertion_curve.attributions": (lambda a: insertion_curve(NET, X, a, T, steps=3), ("attributions",)),
    "infidelity.attributions": (lambda a: infidelity(NET, X, a, T, samples=2), ("attributions",)),
    "remove_features.attributions": (lambda a: remove_features(X, a, 0.5), ("attributions",)),
    "feature_order.attributions": (lambda a: feature_order(a), ("attributions",)),
    "roar.train_attr": (lambda a: roar(retrain, X, T, X, T, a, X, fractions=[0.2]), ("train_attr",)),
    "roar.test_attr": (lambda a: roar(retrain, X, T, X, T, X, a, fractions=[0.2]), ("test_attr",)),
    "roar.train_x": (lambda a: roar(retrain, a, T, X, T, X, X, fractions=[0.2]), ("train_x",)),
    "gini_index.maps": (lambda m: gini_index(m), ("maps",)),
    "instability.b": (lambda m: instability(X, m), ("b",)),
    "map_correlation.a": (lambda m: map_correlation(m, X), ("a",)),
    "combine_layer_maps.maps": (lambda m: combine_layer_maps([X[:, 0], m]), ("maps",)),
    "pointing_game.masks": (lambda m: pointing_game(X, m), ("masks",)),
    "pointing_game.maps": (lambda m: pointing_game(m, X > 0.5), ("maps",)),
    "noise_scale.x": (lambda m: noise_scale(m, 0.1), ("x",)),
}
# A finite tensor of another shape that some functions take by design.
ACCEPTED = {("feature_order.attributions", "wrong shape"), ("gini_index.maps", "wrong shape"),
            ("noise_scale.x", "wrong shape"), ("pointing_game.masks", "bool")}


@settings(SETTINGS, max_examples=200)
@given(case=st.sampled_from(sorted(TENSOR_ARGS)), mutation=st.sampled_from(BAD_TENSORS))
def test_bad_tensor_arguments_are_refused(case: str, mutation: str) -> None:
    call, names = TENSOR_ARGS[case]
    value = _tensor_mutations(X)[mutation]
    result = outcome(lambda: call(value), names, _valid_any)
    if (case, mutation) not in ACCEPTED:
        assert result is None, f"{case} accepted a {mutation} tensor"


# --- layers, explainers, methods, models ----------------------------------------------------------------

LAYERS: dict[str, Any] = {
    "foreign layer": OTHER[0],
    "not a module": "1",
    "the flatten (not a feature map)": NET[3],
    "a layer the forward never calls": nn.Conv2d(1, 1, 1),
    "None": None,
}
LAYER_CALLS = ["layer_activation_and_grad", "grad_cam", "grad_cam_pp", "smooth_grad_cam_pp", "xgrad_cam",
               "norm_grad", "conservation_error"]


@SETTINGS
@given(name=st.sampled_from(LAYER_CALLS), which=st.sampled_from(sorted(LAYERS)))
def test_bad_layers_are_refused(name: str, which: str) -> None:
    fn, kwargs, _ = CALLS[name]
    result = outcome(lambda: fn(NET, X, T, **{**kwargs, "layer": LAYERS[which]}), ("layer",), lambda out: None)
    assert result is None, f"{name} accepted {which}"


def _method_without_layer(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    return saliency(model, x, target)


CALLABLES: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "max_sensitivity.explain": (lambda f: max_sensitivity(f, X, T, samples=1), ("explain",)),
    "conservation_error.method": (lambda f: conservation_error(NET, X, T, layer=LAYER, method=f), ("method",)),
    "layer_maps.method": (lambda f: layer_maps(f, NET, X, T, layers=[LAYER]), ("method",)),
    "max_min_class_correlation.method": (lambda f: max_min_class_correlation(f, NET, X, layer=LAYER), ("method",)),
    "roar.train": (lambda f: roar(f, X, T, X, T, X, X, fractions=[0.2]), ("train",)),
    "explainer.method": (lambda f: explainer(f, NET, samples=2)(X, T), ("method",)),
}
LAYER_METHOD_CASES = ("conservation_error.method", "layer_maps.method", "max_min_class_correlation.method")
WRONG_CALLABLES: dict[str, Any] = {
    "saliency (model, x, target)": saliency,
    "grad_cam (needs layer)": grad_cam,
    "a one-argument lambda": lambda x: x,
    "a method without layer": _method_without_layer,
    "not callable": 3,
    "None": None,
}


@SETTINGS
@given(case=st.sampled_from(sorted(CALLABLES)), which=st.sampled_from(sorted(WRONG_CALLABLES)))
def test_callables_of_the_wrong_signature_are_refused(case: str, which: str) -> None:
    call, names = CALLABLES[case]
    if case in LAYER_METHOD_CASES and which == "grad_cam (needs layer)":  # the right kind there (a correlation
        call(grad_cam)  # with an all-zero map is NaN, as documented)
        return
    result = outcome(lambda: call(WRONG_CALLABLES[which]), names, _valid_any)
    assert result is None, f"{case} accepted {which}"


def _model(which: str) -> Any:
    net = make_cnn()
    if which in ("nan weight", "inf weight"):
        with torch.no_grad():
            net[5].weight[0, 0] = math.nan if which == "nan weight" else math.inf
    elif which == "float64 model":
        net = net.double()
    elif which == "meta model":
        net = net.to("meta")
    elif which == "not callable":
        net = "net"
    return net


@settings(SETTINGS, max_examples=100)
@given(name=st.sampled_from(sorted(set(CALLS) - {"max_sensitivity"})),
       which=st.sampled_from(["nan weight", "inf weight", "float64 model", "meta model", "not callable"]))
def test_bad_models_are_refused(name: str, which: str) -> None:
    fn, kwargs, _ = CALLS[name]
    model = _model(which)
    if name in LAYER_CALLS and isinstance(model, nn.Module):
        kwargs = {**kwargs, "layer": model[1]}
    names = ("model", "x") if which == "float64 model" else ("model",)
    result = outcome(lambda: fn(model, X, T, **kwargs), names, lambda out: None)
    assert result is None, f"{name} accepted a model with {which}"


@SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_gini_index_is_in_range(seed: int) -> None:
    maps = torch.rand(4, 6, generator=torch.Generator().manual_seed(seed))
    maps[0] = 0.0  # an all-zero map counts as evenly spread
    g = gini_index(maps)
    assert g.shape == (4,) and bool(torch.isfinite(g).all())
    assert g[0] == 0 and bool((g >= 0).all()) and bool((g <= 1 - 1 / 6 + 1e-6).all())
