"""The SAM cases of the reliability issue (each exact call now raises a clear error), and the warning for
training loops ported from davda54/sam (``loss.backward(); opt.step(closure)``)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.sam import (
    SAM,
    frozen_running_stats,
    hessian_top_eigenvalue,
    make_optimizer,
    noisy_labels,
    norm_only_sam,
    train_from,
    worst_case_sharpness,
)
from labkit.training import fit, fit_loss


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2))


def data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


# --- the listed cases ---------------------------------------------------------------------------------

def test_add_param_group_refuses_a_nan_rho_like_the_constructor() -> None:
    model = net()
    opt = SAM(model[0].parameters(), torch.optim.SGD, lr=0.1)
    for bad in (math.nan, math.inf, -0.1):
        with pytest.raises(ValueError, match="rho"):
            opt.add_param_group({"params": model[3].parameters(), "rho": bad})
    with pytest.raises(ValueError, match="rho"):
        SAM([{"params": model[0].parameters(), "rho": math.nan}], torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": model[3].parameters(), "lr": math.nan})
    assert len(opt.param_groups) == 1  # nothing half-added


@pytest.mark.parametrize("kwargs, name", [
    (dict(eta=math.nan), "eta"), (dict(eta=math.nan, adaptive=True), "eta"),
    (dict(step_size=math.nan), "step_size"), (dict(step_size=math.inf), "step_size"),
    (dict(step_size=0.0), "step_size"), (dict(eta=-1.0, adaptive=True), "eta"),
])
def test_worst_case_sharpness_refuses_nan_options(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        worst_case_sharpness(net(), F.cross_entropy, data(), rho=0.1, **kwargs)


def test_worst_case_sharpness_refuses_another_models_parameters() -> None:
    other = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="not a parameter of model"):
        worst_case_sharpness(net(), F.cross_entropy, data(), rho=0.1, params=list(other.parameters()))
    with pytest.raises(ValueError, match="not a parameter of model"):  # also at rho = 0, where nothing is measured
        worst_case_sharpness(net(), F.cross_entropy, data(), rho=0.0, params=list(other.parameters()))


def test_frozen_running_stats_of_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"), frozen_running_stats("x"):
        pass
    with frozen_running_stats(None):  # None stays a no-op
        pass


def test_noisy_labels_of_an_empty_tensor() -> None:
    with pytest.raises(ValueError, match="labels is empty"):
        noisy_labels(torch.tensor([], dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="labels is empty"):
        noisy_labels(torch.zeros(0, dtype=torch.long), 0.1, num_classes=3)


def test_confusing_errors_now_name_the_argument() -> None:
    model, (x, y) = net(), data()
    with pytest.raises(TypeError, match=r"data\[0\] has dtype torch.float64"):
        worst_case_sharpness(model, F.cross_entropy, (x.double(), y), rho=0.1)
    with pytest.raises(ValueError, match=r"data\[0\].*does not fit the model"):
        hessian_top_eigenvalue(model, F.cross_entropy, (x[:, :2], y))
    with pytest.raises(ValueError, match=r"data\[1\] \(targets\) must hold class indices in \[0, 2\)"):
        train_from(model, (x, y + 2), lr=0.1, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"test\[1\] \(targets\) must hold class indices"):
        train_from(model, (x, y), test=(x, y - 1), lr=0.1, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"data\[0\] \(inputs\) contains NaN"):
        worst_case_sharpness(model, F.cross_entropy, (x * math.nan, y), rho=0.1)
    with pytest.raises(ValueError, match="meta"):
        worst_case_sharpness(model, F.cross_entropy, (x.to("meta"), y), rho=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        SAM(model.parameters(), torch.optim.SGD, lr=math.nan)
    with pytest.raises(TypeError, match="lr must be a real number"):
        SAM(model.parameters(), torch.optim.SGD, lr=None)
    with pytest.raises(ValueError, match="dampening"):
        make_optimizer(model, "sam", lr=0.1, momentum=0.9, dampening=math.nan)


def test_a_nan_inside_the_ball_is_an_error_not_a_zero() -> None:
    """A perturbed loss of NaN/inf made ``max`` skip it (worst case 0.0); now it names rho."""
    with pytest.raises(ValueError, match="rho"):
        worst_case_sharpness(net(), F.cross_entropy, data(), rho=1e38, steps=2)


# --- the ported-loop trap ---------------------------------------------------------------------------------

def _closure(model, x, y, opt=None):
    def closure():
        if opt is not None:
            opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def _user_warnings(record) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, UserWarning) and "SAM.step(closure)" in str(w.message)]


@pytest.mark.parametrize("zero_first", [False, True], ids=["zero_grad-after-step", "zero_grad-before-backward"])
def test_a_loop_ported_from_davda54_warns_once_naming_cause_and_fix(zero_first: bool) -> None:
    model, (x, y) = net(), data()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, model=model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            if zero_first:
                opt.zero_grad()
            F.cross_entropy(model(x), y).backward()  # the popular implementation's first pass
            opt.step(_closure(model, x, y))
            if not zero_first:
                opt.zero_grad()
    found = _user_warnings(record)
    assert len(found) == 1  # once per optimizer
    message = str(found[0].message)
    assert "three forward-backward passes" in message and "davda54" in message
    assert "remove the loss.backward()" in message and "zero_grad" in message
    assert found[0].filename == __file__  # points at the caller's loop


def test_the_torch_closure_contract_does_not_warn() -> None:
    model, (x, y) = net(), data()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            opt.step(_closure(model, x, y, opt))
        opt.zero_grad(set_to_none=False)  # zeroed (not None) grads are no backward either
        opt.step(_closure(model, x, y, opt))
        # by hand, then back to step(closure): the hand-made step leaves gradients of its own passes
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
        opt.step(_closure(model, x, y, opt))


def test_stale_gradients_from_before_the_optimizer_do_not_warn() -> None:
    model, (x, y) = net(), data()
    F.cross_entropy(model(x), y).backward()  # e.g. left by an earlier measurement or optimizer
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(_closure(model, x, y, opt))


@pytest.mark.parametrize("kind", ["sam", "asam", "sam-on"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_fit_never_triggers_the_warning(kind: str, batch_size: int | None) -> None:
    model, (x, y) = net(), data()
    opt = make_optimizer(model, kind, lr=0.1, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(model, fit_loss(F.cross_entropy), (x, y), optimizer=opt, steps=5, batch_size=batch_size,
            progress=False)
        train_from(model, (x, y), kind=kind, lr=0.1, steps=3, batch_size=batch_size, progress=False)
    assert not opt._warned_backward


def test_the_warning_is_per_optimizer() -> None:
    model, (x, y) = net(), data()
    for _ in range(2):
        opt = norm_only_sam(model, torch.optim.SGD, lr=0.1)
        with pytest.warns(UserWarning, match="SAM.step"):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step(_closure(model, x, y))


def test_add_param_group_takes_a_generator_or_a_single_tensor() -> None:
    model = net()
    opt = SAM(model[0].parameters(), torch.optim.SGD, lr=0.1)
    opt.add_param_group({"params": model[3].parameters()})
    opt.add_param_group({"params": model[1].weight})
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2, 1]
