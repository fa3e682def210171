"""Property-based checks of the diffusion pillar's public functions (hypothesis, derandomized).

Every call gets a mix of good and bad arguments: NaN / inf / bools / strings for numbers, zero and
negative counts, tensors with NaN or inf, another dtype, a missing or extra feature, no samples, on the
``meta`` device, class labels out of range. Each call either raises ``ValueError`` / ``TypeError`` whose
message names one of the arguments that was made bad, or returns a finite result of the documented shape.
A call with only good arguments must succeed.
"""

import math
import re
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.diffusion import (
    CFG,
    AdaptiveGuidance,
    ClassifierGuidance,
    GaussianMixture,
    LinearGaussianModel,
    MLPDenoiser,
    cfg,
    cfg_decomposition,
    cfg_rescale,
    classifier_gradient,
    contrastive_components,
    cosine,
    denoiser_gaps,
    denoising_loss,
    displacement,
    gaussian_denoise,
    gaussian_fit,
    gaussian_teleport,
    guided_run,
    karras_sigmas,
    mmd2,
    mode_mass,
    precision_recall,
    ring_mixture,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_heun,
    teleport_sweep,
    train_denoiser,
    wiener_gain,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
FEW = settings(SETTINGS, max_examples=20)

NAN, INF = math.nan, math.inf
BAD_NUMBERS = [NAN, INF, -INF, True, "1", None, -1.0, 0.0, -2.5]
TENSOR_FAULTS = ["nan", "inf", "float64", "int", "bool", "feature", "flat", "empty", "meta", "list"]


@dataclass(frozen=True)
class Arg:
    """A generated argument: its value and whether it was made bad."""

    value: object
    bad: bool


def numbers(good: st.SearchStrategy) -> st.SearchStrategy:
    """A good number (``bad=False``) or one of ``BAD_NUMBERS`` (``bad=True``; some may still be valid)."""
    good_arg = good.map(lambda v: Arg(v, False))
    return st.one_of(good_arg, good_arg, st.sampled_from(BAD_NUMBERS).map(lambda v: Arg(v, True)))


def corrupt(base: torch.Tensor, fault: str | None, where: int = 0) -> torch.Tensor | list:
    t = base.clone()
    if fault is None:
        return t
    if fault in ("nan", "inf"):
        t.view(-1)[where % t.numel()] = NAN if fault == "nan" else -INF
        return t
    return {
        "float64": lambda: t.double(),
        "int": lambda: t.round().long(),
        "bool": lambda: t > 0,
        "feature": lambda: torch.cat([t, t[..., :1]], dim=-1),
        "flat": lambda: t.reshape(-1),
        "empty": lambda: t[:0],
        "meta": lambda: t.to("meta"),
        "list": lambda: t.tolist(),
    }[fault]()


def tensors(base: torch.Tensor, faults: list[str] = TENSOR_FAULTS) -> st.SearchStrategy:
    """``base`` (``bad=False``) or ``base`` with one fault (``bad=True``)."""
    fault = st.one_of(st.none(), st.sampled_from(faults))
    return st.builds(lambda f, i: Arg(corrupt(base, f, i), f is not None), fault, st.integers(0, 10_000))


def finite(out: object) -> None:
    if isinstance(out, torch.Tensor):
        assert bool(torch.isfinite(out).all()), out
    elif isinstance(out, float):
        assert math.isfinite(out), out
    elif isinstance(out, (tuple, list)):
        for o in out:
            finite(o)


def names(message: str, name: str) -> bool:
    """``message`` names the argument ``name`` as the subject of a complaint: ``name must ...``,
    ``name[0] (what) must ...``, ``name contains ...``, ``name and other must ...``, ``name=...``."""
    verbs = "must|contains|is|has|and|returned|needs|holds"
    return re.search(rf"(?<![\w.]){re.escape(name)}(\[[^\]]*\])?( \([^)]*\))?(=| ({verbs})\b)", message) is not None


def named_error_or(call, args: dict[str, Arg], check=finite) -> object:
    """Run ``call``: a ValueError/TypeError must name one of the arguments made bad (none bad: no error);
    otherwise ``check`` the result."""
    bad = [name for name, a in args.items() if a.bad]
    try:
        out = call()
    except (ValueError, TypeError) as err:
        assert bad, f"only good arguments, yet {type(err).__name__}: {err}"
        assert any(names(str(err), name) for name in bad), f"{type(err).__name__}: {err!r} names none of {bad}"
        return None
    check(out)
    return out


def v(args: dict[str, Arg]) -> dict[str, object]:
    return {name: a.value for name, a in args.items()}


MIX = ring_mixture(2, 2, radius=2.0, std=0.5, spread=1.0)
X = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
SIGMAS = karras_sigmas(3, sigma_min=0.05, sigma_max=10.0)
MLP = MLPDenoiser(2, 2, hidden=8, depth=1, embed=4).eval()
labels = st.one_of(st.sampled_from([0, 1]).map(lambda v: Arg(v, False)),
                   st.sampled_from([2, -1, 7, True, 0.5, "a", torch.tensor([0, 1]), torch.tensor(1.0),
                                    torch.tensor(True)]).map(lambda v: Arg(v, True)))


# --- schedules and mixtures ------------------------------------------------------------------------

@SETTINGS
@given(steps=st.one_of(st.integers(1, 6).map(lambda v: Arg(v, False)),
                       st.sampled_from([0, -2, 2.0, True, None]).map(lambda v: Arg(v, True))),
       sigma_min=numbers(st.floats(1e-3, 0.5)), sigma_max=numbers(st.floats(1.0, 100.0)),
       rho=numbers(st.floats(0.5, 10.0)))
def test_karras_sigmas(steps, sigma_min, sigma_max, rho):
    args = dict(steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

    def check(s):
        finite(s)
        assert s.shape == (steps.value + 1,) and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    named_error_or(lambda: karras_sigmas(**v(args)), args, check)


@SETTINGS
@given(means=tensors(MIX.means, ["nan", "inf", "int", "bool", "feature", "flat", "empty", "meta", "list"]),
       covariances=tensors(MIX.covariances.diagonal(dim1=1, dim2=2)[:, 0],
                           ["nan", "inf", "bool", "feature", "empty", "meta", "list"]),
       weights=tensors(MIX.weights, ["nan", "inf", "bool", "empty", "meta", "list"]),
       negative=st.booleans(), labels_arg=tensors(MIX.labels, ["float64", "bool", "flat", "meta", "list"]))
def test_gaussian_mixture_construction(means, covariances, weights, negative, labels_arg):
    if negative and not covariances.bad and isinstance(covariances.value, torch.Tensor):
        covariances = Arg(-covariances.value, True)
    args = dict(means=means, covariances=covariances, weights=weights, labels=labels_arg)

    def check(m):
        x = torch.zeros(3, m.dim)
        finite(m.log_prob(x, 1.0))
        finite(m.denoise(x, 1.0))
    named_error_or(lambda: GaussianMixture(means.value, covariances.value, weights.value, labels=labels_arg.value),
                   args, check)


@SETTINGS
@given(method=st.sampled_from(["log_prob", "responsibilities", "score", "denoise", "class_posterior",
                               "log_class_posterior", "assign"]),
       x=tensors(X), sigma=numbers(st.floats(0.1, 20.0)), label=st.one_of(st.none().map(lambda v: Arg(v, False)),
                                                                          labels))
def test_mixture_quantities(method, x, sigma, label):
    n = 6
    args = dict(x=x, sigma=sigma, label=label)
    fn = getattr(MIX, method)
    shapes = {"log_prob": (n,), "responsibilities": (n, 4), "score": (n, 2), "denoise": (n, 2),
              "class_posterior": (n, 2), "log_class_posterior": (n, 2), "assign": (n,)}
    if method == "assign":
        args = dict(x=x)
        call = lambda: fn(x.value)  # noqa: E731
    elif method in ("class_posterior", "log_class_posterior"):
        args = dict(x=x, sigma=sigma)
        call = lambda: fn(x.value, sigma.value)  # noqa: E731
    else:
        call = lambda: fn(x.value, sigma.value, label=label.value)  # noqa: E731

    def check(out):
        finite(out)
        assert out.shape == shapes[method]
    named_error_or(call, args, check)


@SETTINGS
@given(n=st.one_of(st.integers(1, 5).map(lambda v: Arg(v, False)),
                   st.sampled_from([0, -1, 2.0, True, "3", None]).map(lambda v: Arg(v, True))),
       sigma=numbers(st.floats(0.0, 5.0)),
       generator=st.sampled_from([Arg(None, False), Arg(torch.Generator().manual_seed(1), False), Arg(3, True)]))
def test_mixture_sampling(n, sigma, generator):
    args = dict(n=n, sigma=sigma, generator=generator)

    def check(out):
        finite(out.samples)
        assert out.samples.shape == (n.value, 2) and out.components.shape == (n.value,)
    named_error_or(lambda: MIX.sample_components(n.value, sigma=sigma.value, generator=generator.value), args, check)


@SETTINGS
@given(num_classes=st.one_of(st.integers(1, 3).map(lambda v: Arg(v, False)),
                             st.sampled_from([0, -1, 2.5, True]).map(lambda v: Arg(v, True))),
       modes_per_class=st.one_of(st.integers(1, 3).map(lambda v: Arg(v, False)),
                                 st.sampled_from([0, None]).map(lambda v: Arg(v, True))),
       radius=numbers(st.floats(0.5, 5.0)), std=numbers(st.floats(0.05, 2.0)), spread=numbers(st.floats(0.0, 2.0)))
def test_ring_mixture(num_classes, modes_per_class, radius, std, spread):
    args = dict(num_classes=num_classes, modes_per_class=modes_per_class, radius=radius, std=std, spread=spread)

    def check(m):
        finite(m.means)
        assert m.means.shape == (num_classes.value * modes_per_class.value, 2)
    named_error_or(lambda: ring_mixture(**v(args)), args, check)


# --- metrics -----------------------------------------------------------------------------------------

@SETTINGS
@given(x=tensors(X), y=tensors(X + 0.5), bandwidths=st.one_of(
    st.none().map(lambda v: Arg(v, False)),
    st.lists(st.floats(0.1, 5.0), min_size=1, max_size=3).map(lambda v: Arg(tuple(v), False)),
    st.lists(st.sampled_from([NAN, INF, 0.0, -1.0, True, "a", 1e-300]), min_size=1, max_size=2).map(
        lambda v: Arg(tuple(v), True)),
    st.sampled_from([(), 1.0, "ab"]).map(lambda v: Arg(v, True))),
    k=st.one_of(st.integers(1, 4).map(lambda v: Arg(v, False)),
                st.sampled_from([0, -1, 6, 2.0, True]).map(lambda v: Arg(v, True))))
def test_sample_metrics(x, y, bandwidths, k):
    named_error_or(lambda: mmd2(x.value, y.value, bandwidths=bandwidths.value), dict(x=x, y=y, bandwidths=bandwidths))

    def in_unit(pr):
        finite(pr)
        assert 0 <= pr.precision <= 1 and 0 <= pr.recall <= 1
    named_error_or(lambda: precision_recall(x.value, y.value, k=k.value), dict(real=x, fake=y, k=k), in_unit)
    named_error_or(lambda: displacement(x.value, y.value), dict(a=x, b=y))


@SETTINGS
@given(samples=tensors(X), label=st.one_of(st.none().map(lambda v: Arg(v, False)), labels),
       soft=st.sampled_from([Arg(False, False), Arg(True, False), Arg("yes", True)]))
def test_mode_mass(samples, label, soft):
    def check(m):
        finite(m)
        assert m.shape == (4,) and abs(float(m.sum()) - 1) < 1e-5
    named_error_or(lambda: mode_mass(samples.value, MIX, label=label.value, soft=soft.value),
                   dict(samples=samples, label=label, soft=soft), check)


# --- guidance ----------------------------------------------------------------------------------------

@SETTINGS
@given(cond=tensors(X), uncond=tensors(X * 2), w=numbers(st.floats(-2.0, 8.0)), phi=numbers(st.floats(0.0, 1.0)))
def test_guidance_formulas(cond, uncond, w, phi):
    def shaped(out):
        finite(out)
        assert out.shape == cond.value.shape
    named_error_or(lambda: cfg(cond.value, uncond.value, w.value), dict(cond=cond, uncond=uncond, w=w), shaped)
    named_error_or(lambda: cfg_rescale(uncond.value, cond.value, phi.value), dict(guided=uncond, cond=cond, phi=phi),
                   shaped)

    def per_sample(out):
        finite(out)
        assert out.shape == (cond.value.shape[0],)
    named_error_or(lambda: cosine(cond.value, uncond.value), dict(a=cond, b=uncond), per_sample)


@SETTINGS
@given(w=numbers(st.floats(0.0, 8.0)), rescale=numbers(st.floats(0.0, 1.0)), threshold=numbers(st.floats(-1.0, 1.0)),
       warmup=st.one_of(st.integers(0, 3).map(lambda v: Arg(v, False)),
                        st.sampled_from([-1, 1.5, True]).map(lambda v: Arg(v, True))),
       patience=st.one_of(st.integers(1, 3).map(lambda v: Arg(v, False)),
                          st.sampled_from([0, -2, None]).map(lambda v: Arg(v, True))),
       interval=st.one_of(st.none().map(lambda v: Arg(v, False)),
                          st.tuples(st.floats(0.0, 1.0), st.floats(2.0, 50.0)).map(lambda v: Arg(v, False)),
                          st.sampled_from([(NAN, 1.0), (0.0, NAN), (2.0, 1.0), (-1.0, 2.0), (0.0,), "ab",
                                           ("a", 1.0)]).map(lambda v: Arg(v, True))))
def test_guidance_policies(w, rescale, threshold, warmup, patience, interval):
    named_error_or(lambda: CFG(w.value, rescale=rescale.value, interval=interval.value),
                   dict(w=w, rescale=rescale, interval=interval), check=lambda p: None)
    named_error_or(lambda: AdaptiveGuidance(w.value, threshold=threshold.value, warmup=warmup.value,
                                            patience=patience.value),
                   dict(w=w, threshold=threshold, warmup=warmup, patience=patience), check=lambda p: None)
    named_error_or(lambda: ClassifierGuidance(MIX.classifier, w.value, interval=interval.value),
                   dict(scale=Arg(None, w.bad), interval=interval), check=lambda p: None)


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim, "ddpm": sample_ddpm}
BAD_SIGMAS = {"nan": torch.tensor([10.0, NAN, 0.0]), "increasing": torch.tensor([1.0, 2.0, 0.0]),
              "one": torch.tensor([1.0]), "2d": SIGMAS[None], "negative": torch.tensor([1.0, -1.0]),
              "meta": SIGMAS.to("meta"), "bool": torch.tensor([True, False]), "string": "abc"}


@SETTINGS
@given(kind=st.sampled_from(sorted(SAMPLERS)), denoiser=st.sampled_from(["mixture", "mlp"]),
       x=tensors(X * 10), sigmas=st.one_of(st.just(Arg(SIGMAS, False)),
                                           st.sampled_from(sorted(BAD_SIGMAS)).map(lambda k: Arg(BAD_SIGMAS[k], True))),
       label=st.one_of(st.none().map(lambda v: Arg(v, False)), labels),
       policy=st.sampled_from([None, "cfg", "adaptive", "classifier", "interval"]))
def test_samplers(kind, denoiser, x, sigmas, label, policy):
    guidance = {None: None, "cfg": CFG(3.0), "adaptive": AdaptiveGuidance(3.0, warmup=0),
                "classifier": ClassifierGuidance(MIX.classifier, 2.0), "interval": CFG(2.0, interval=(0.1, 5.0))}
    model = MIX if denoiser == "mixture" else MLP
    if policy is not None and label.value is None:
        label = Arg(None, True)  # guidance needs a label: the error must say so
    args = dict(x=x, sigmas=sigmas, label=label)

    def check(out):
        finite(out.samples)
        assert out.samples.shape == x.value.shape and out.nfe >= len(SIGMAS) - 1
    named_error_or(lambda: SAMPLERS[kind](model, x.value, sigmas.value, label=label.value,
                                          guidance=guidance[policy], generator=torch.Generator().manual_seed(0)),
                   args, check)


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x, sigma):
        return self.lin(x)


CLF = Classifier()


@SETTINGS
@given(x=tensors(X), sigma=numbers(st.floats(0.1, 10.0)), label=labels, module=st.booleans())
def test_classifier_gradient(x, sigma, label, module):
    classifier = CLF if module else MIX.classifier
    if module and type(label.value) is int and label.value == 2:
        label = Arg(2, False)  # the module has three classes

    def check(g):
        finite(g)
        assert g.shape == X.shape
    named_error_or(lambda: classifier_gradient(classifier, x.value, sigma.value, label.value),
                   dict(x=x, sigma=sigma, label=label), check)


# --- the linear-Gaussian model ------------------------------------------------------------------------

COV = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
MEAN = torch.tensor([0.5, -1.0])
COV_FAULTS = ["nan", "inf", "float64", "int", "flat", "empty", "meta", "list", "feature"]


@SETTINGS
@given(x=tensors(X), sigma=numbers(st.floats(0.05, 20.0)), sigma_to=numbers(st.floats(0.0, 0.05)),
       mean=tensors(MEAN, ["nan", "inf", "float64", "int", "empty", "meta", "list", "feature"]),
       cov=tensors(COV, COV_FAULTS), asym=st.sampled_from([None, "asymmetric", "negative"]))
def test_linear_gaussian(x, sigma, sigma_to, mean, cov, asym):
    if asym is not None and not cov.bad:
        cov = Arg(COV + torch.tensor([[0.0, 1.0], [0.0, 0.0]]) if asym == "asymmetric" else -COV, True)

    def square(out):
        finite(out)
        assert out.shape == (2, 2)
    named_error_or(lambda: wiener_gain(cov.value, sigma.value), dict(cov=cov, sigma=sigma), square)

    def shaped(out):
        finite(out)
        assert out.shape == X.shape
    args = dict(x=x, sigma=sigma, mean=mean, cov=cov)
    named_error_or(lambda: gaussian_denoise(x.value, sigma.value, mean.value, cov.value), args, shaped)
    args = dict(x=x, sigma_from=sigma, sigma_to=sigma_to, mean=mean, cov=cov)
    named_error_or(lambda: gaussian_teleport(x.value, sigma.value, sigma_to.value, mean.value, cov.value), args,
                   shaped)
    named_error_or(lambda: contrastive_components(cov.value, COV * 0.5), dict(cov_c=cov), lambda e: finite(list(e)))
    args = dict(x=x, sigma=sigma, mean_c=mean, cov_c=cov)
    named_error_or(lambda: cfg_decomposition(x.value, sigma.value, mean_c=mean.value, cov_c=cov.value,
                                             mean_u=MEAN * 0, cov_u=COV * 2).total, args, shaped)


@SETTINGS
@given(x=tensors(X), labels_arg=tensors(torch.tensor([0, 1, 0, 1, 0, 1]), ["float64", "bool", "flat", "meta",
                                                                           "empty", "list"]),
       negative=st.booleans(), ridge=numbers(st.floats(0.0, 1.0)), label=st.one_of(
           st.none().map(lambda v: Arg(v, False)), labels))
def test_linear_gaussian_model(x, labels_arg, negative, ridge, label):
    if negative and not labels_arg.bad:
        labels_arg = Arg(torch.tensor([0, 1, 0, 1, 0, -1]), True)

    def fit(f):
        finite(list(f))
        d = x.value.shape[1]
        assert f.mean.shape == (d,) and f.cov.shape == (d, d)
    named_error_or(lambda: gaussian_fit(x.value, ridge=ridge.value), dict(x=x, ridge=ridge), fit)
    model = named_error_or(lambda: LinearGaussianModel(x.value, labels_arg.value, ridge=ridge.value),
                           dict(x=x, labels=labels_arg, ridge=ridge), check=lambda m: None)
    if model is not None:
        probe = torch.zeros(6, model.unconditional.mean.shape[0], dtype=model.unconditional.mean.dtype)

        def shaped(out):
            finite(out)
            assert out.shape == probe.shape
        named_error_or(lambda: model(probe, 1.0, label.value), dict(label=label), shaped)


# --- the trained denoiser ----------------------------------------------------------------------------

@SETTINGS
@given(x=tensors(X), sigma=st.one_of(numbers(st.floats(0.01, 50.0)),
                                     st.sampled_from([torch.ones(3), torch.ones(6, 1), torch.ones(6).to("meta")]).map(
                                         lambda v: Arg(v, True))),
       label=st.one_of(st.none().map(lambda v: Arg(v, False)), labels))
def test_mlp_denoiser_forward(x, sigma, label):
    if type(label.value) is int and label.value == 2:
        label = Arg(2, False)  # the model's null class is a valid input of the model itself

    def check(out):
        finite(out)
        assert out.shape == X.shape
    named_error_or(lambda: MLP(x.value, sigma.value, label.value), dict(x=x, sigma=sigma, label=label), check)


@SETTINGS
@given(dim=st.one_of(st.integers(1, 3).map(lambda v: Arg(v, False)),
                     st.sampled_from([0, -1, 2.0, True]).map(lambda v: Arg(v, True))),
       num_classes=st.one_of(st.integers(0, 3).map(lambda v: Arg(v, False)),
                             st.sampled_from([-1, 1.5, None]).map(lambda v: Arg(v, True))),
       embed=st.one_of(st.sampled_from([2, 4, 8]).map(lambda v: Arg(v, False)),
                       st.sampled_from([0, 1, 3, -4, 4.0]).map(lambda v: Arg(v, True))),
       sigma_data=numbers(st.floats(0.1, 2.0)))
def test_mlp_denoiser_construction(dim, num_classes, embed, sigma_data):
    args = dict(dim=dim, num_classes=num_classes, embed=embed, sigma_data=sigma_data)

    def check(model):
        out = model(torch.zeros(2, dim.value), 1.0)
        finite(out)
        assert out.shape == (2, dim.value)
    named_error_or(lambda: MLPDenoiser(dim.value, num_classes.value, hidden=4, depth=1, embed=embed.value,
                                       sigma_data=sigma_data.value), args, check)


@SETTINGS
@given(x0=tensors(X), labels_arg=st.one_of(st.just(Arg(torch.tensor([0, 1, 0, 1, 0, 1]), False)),
                                           st.sampled_from([torch.tensor([0, 1, 0, 1, 0, 2]), torch.tensor([0, 1]),
                                                            torch.ones(6), torch.tensor([0, 1, 0, 1, 0, -1])]).map(
                                               lambda v: Arg(v, True))),
       p_mean=numbers(st.floats(-2.0, 1.0)), p_std=numbers(st.floats(0.1, 2.0)),
       label_dropout=numbers(st.floats(0.01, 0.9)))
def test_denoising_loss(x0, labels_arg, p_mean, p_std, label_dropout):
    args = dict(x0=x0, labels=labels_arg, p_mean=p_mean, p_std=p_std, label_dropout=label_dropout)

    def check(loss):
        finite(loss)
        assert loss.shape == ()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        named_error_or(lambda: denoising_loss(MLP, x0.value, labels_arg.value, p_mean=p_mean.value, p_std=p_std.value,
                                              label_dropout=label_dropout.value), args, check)


@FEW
@given(steps=st.one_of(st.just(Arg(2, False)), st.sampled_from([0, -1, 1.5]).map(lambda v: Arg(v, True))),
       lr=numbers(st.floats(1e-4, 1e-2)), x=tensors(X, ["nan", "float64", "int", "empty", "meta", "flat"]))
def test_train_denoiser(steps, lr, x):
    model = MLPDenoiser(2, 2, hidden=4, depth=1, embed=2)
    labels_ = torch.tensor([0, 1, 0, 1, 0, 1])

    def check(history):
        assert len(history.loss) == steps.value and all(math.isfinite(v) for v in history.loss)
    with torch.random.fork_rng():
        named_error_or(lambda: train_denoiser(model, x.value, labels_, steps=steps.value, lr=lr.value, batch_size=4,
                                              progress=False), dict(steps=steps, lr=lr, x=x), check)


# --- experiments -------------------------------------------------------------------------------------

@FEW
@given(label=labels, k=st.one_of(st.integers(1, 3).map(lambda v: Arg(v, False)),
                                 st.sampled_from([0, 8, -1, True]).map(lambda v: Arg(v, True))),
       reference=tensors(X + 1.0, ["nan", "int", "feature", "empty", "meta"]))
def test_guided_run(label, k, reference):
    def check(r):
        finite([r.samples, r.confidence, r.mmd2, r.precision, r.recall, *r.modes])
        assert r.samples.shape == X.shape and len(r.modes) == 2
    named_error_or(lambda: guided_run(MIX, X * 10, SIGMAS, CFG(2.0), label=label.value, reference=reference.value,
                                      k=k.value), dict(label=label, k=k, reference=reference), check)


@FEW
@given(noise_levels=st.one_of(st.lists(st.floats(0.1, 20.0), min_size=1, max_size=3).map(lambda v: Arg(v, False)),
                              st.sampled_from([[], [NAN], [1.0, -1.0], [0.0], [INF], "ab", 1.0]).map(
                                  lambda v: Arg(v, True))),
       pairs=st.sampled_from([Arg([("mixture", "mlp")], False), Arg([], True), Arg([("mixture", "nope")], True),
                              Arg(["ab"], True)]),
       x0=tensors(X, ["nan", "inf", "int", "float64", "empty", "meta", "feature"]))
def test_denoiser_gaps(noise_levels, pairs, x0):
    def check(g):
        finite([x for row in g.gaps.values() for x in row])
        assert all(len(row) == len(noise_levels.value) for row in g.gaps.values())
    named_error_or(lambda: denoiser_gaps(x0.value, noise_levels.value, {"mixture": MIX.denoise, "mlp": MLP},
                                         pairs.value, reference="mixture"),
                   dict(noise_levels=noise_levels, pairs=pairs, x0=x0, x=x0), check)


@FEW
@given(skips=st.one_of(st.lists(st.integers(0, 2), min_size=1, max_size=2).map(lambda v: Arg(v, False)),
                       st.sampled_from([[], [3], [-1], [1.0], [True], 2]).map(lambda v: Arg(v, True))),
       x=tensors(X * 10, ["nan", "int", "feature", "empty", "meta"]),
       reference=tensors(X, ["nan", "int", "feature", "empty", "meta"]))
def test_teleport_sweep(skips, x, reference):
    def check(runs):
        finite([r.mmd2 for r in runs.values()] + [r.samples for r in runs.values()])
        assert len(runs) == len(set(skips.value))
    named_error_or(lambda: teleport_sweep({"exact": MIX}, x.value, SIGMAS, skips.value, mean=MIX.mean(),
                                          cov=MIX.covariance(), reference=reference.value),
                   dict(skips=skips, x=x, reference=reference), check)


def test_good_arguments_reach_every_property():
    """The good corner of each strategy is exercised (a suite that only ever raised would pass vacuously)."""
    out = sample_heun(MLP, X * 10, SIGMAS, label=1, guidance=CFG(2.0))
    assert out.samples.shape == X.shape and bool(torch.isfinite(out.samples).all())
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\)"):
        sample_heun(MLP, X * 10, SIGMAS, label=2, guidance=CFG(2.0))
