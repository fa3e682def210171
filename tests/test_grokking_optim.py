"""PerpGrad (⊥Grad) and Grokfast-EMA wrappers: orthogonal updates, forwarded hyperparameters, shared
param_groups, state_dict round trips, the caller's gradients left intact."""

import copy

import pytest
import torch
from torch import nn

from labkit.grokking import GrokfastEMA, PerpGrad, perpendicular_gradient


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)


def closure_for(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def test_perpendicular_gradient_closed_form():
    w = torch.tensor([3.0, 4.0])
    g = torch.tensor([1.0, 2.0])
    # <g, w> / <w, w> = 11 / 25 -> g - 0.44 w = (-0.32, 0.24); rescaled to ||g|| = sqrt(5)
    raw = perpendicular_gradient(w, g, rescale=False)
    torch.testing.assert_close(raw, torch.tensor([-0.32, 0.24]))
    scaled = perpendicular_gradient(w, g)
    torch.testing.assert_close(scaled.norm(), g.norm())
    assert abs(torch.dot(scaled, w).item()) < 1e-6 * w.norm() * g.norm() * 10


@pytest.mark.parametrize("rescale", [True, False])
def test_sgd_update_is_orthogonal_to_each_weight(rescale):
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = PerpGrad(model.parameters(), torch.optim.SGD, lr=0.1, rescale=rescale)
    x, y = batch()
    opt.step(closure_for(model, opt, x, y))
    for w0, p in zip(before, model.parameters(), strict=True):
        delta = (p.detach() - w0).reshape(-1).double()
        assert delta.norm() > 0
        cos = torch.dot(delta, w0.reshape(-1).double()) / (delta.norm() * w0.norm())
        assert abs(cos.item()) < 1e-5


def test_perp_adamw_equals_adamw_on_projected_gradients_with_every_hyperparameter():
    kw = dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3, amsgrad=True)
    model_a, model_b = small_model(), small_model()
    opt_a = PerpGrad(model_a.parameters(), torch.optim.AdamW, **kw)
    opt_b = torch.optim.AdamW(model_b.parameters(), **kw)
    group = opt_a.param_groups[0]
    for key, value in kw.items():
        assert group[key] == value, key
    assert opt_a.base_optimizer.defaults["betas"] == (0.8, 0.95)
    x, y = batch()
    for _ in range(5):
        loss_a = opt_a.step(closure_for(model_a, opt_a, x, y))
        opt_b.zero_grad()
        loss_b = nn.functional.cross_entropy(model_b(x), y)
        loss_b.backward()
        with torch.no_grad():
            for p in model_b.parameters():
                p.grad = perpendicular_gradient(p, p.grad)
        opt_b.step()
        assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_param_groups_are_shared_and_scheduler_reaches_the_base_optimizer():
    model = small_model()
    opt = PerpGrad(model.parameters(), torch.optim.AdamW, lr=1e-2)
    assert opt.param_groups is opt.base_optimizer.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = batch()
    opt.step(closure_for(model, opt, x, y))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_caller_gradient_is_restored_after_step():
    model = small_model()
    opt = PerpGrad(model.parameters(), torch.optim.SGD, lr=0.1)
    x, y = batch()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("cls, extra", [(PerpGrad, {}), (GrokfastEMA, {"ema_alpha": 0.9, "ema_lamb": 3.0})])
def test_state_dict_round_trip_continues_identically(cls, extra):
    x, y = batch()
    model = small_model()
    opt = cls(model.parameters(), torch.optim.AdamW, lr=1e-2, betas=(0.9, 0.98), weight_decay=1.0, **extra)
    for _ in range(3):
        opt.step(closure_for(model, opt, x, y))
    model2 = copy.deepcopy(model)
    opt2 = cls(model2.parameters(), torch.optim.AdamW, lr=0.5, **extra)  # lr and betas come from the state
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["betas"] == (0.9, 0.98) and opt2.param_groups[0]["lr"] == 1e-2
    for _ in range(3):
        opt.step(closure_for(model, opt, x, y))
        opt2.step(closure_for(model2, opt2, x, y))
    for pa, pb in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_grokfast_ema_matches_the_reference_recursion():
    model_a, model_b = small_model(), small_model()
    alpha, lamb = 0.9, 2.0
    opt_a = GrokfastEMA(model_a.parameters(), torch.optim.SGD, lr=0.05, ema_alpha=alpha, ema_lamb=lamb)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.05)
    ema = None
    x, y = batch()
    for _ in range(4):
        opt_a.step(closure_for(model_a, opt_a, x, y))
        opt_b.zero_grad()
        nn.functional.cross_entropy(model_b(x), y).backward()
        grads = [p.grad.clone() for p in model_b.parameters()]
        ema = grads if ema is None else [e * alpha + g * (1 - alpha) for e, g in zip(ema, grads, strict=True)]
        for p, e in zip(model_b.parameters(), ema, strict=True):
            p.grad = p.grad + lamb * e
        opt_b.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_bad_arguments():
    model = small_model()
    with pytest.raises(TypeError, match="base_optimizer_cls"):
        PerpGrad(model.parameters(), "adam")
    with pytest.raises(ValueError, match="ema_alpha"):
        GrokfastEMA(model.parameters(), torch.optim.SGD, ema_alpha=1.0, lr=0.1)


def test_wrapper_forwards_base_keywords_that_share_a_name_with_its_own():
    model = small_model()
    opt = GrokfastEMA(model.parameters(), torch.optim.RMSprop, lr=1e-3, alpha=0.7)
    assert opt.base_optimizer.param_groups[0]["alpha"] == 0.7 and opt.alpha == 0.98
    with pytest.raises(ValueError, match="same shape"):
        perpendicular_gradient(torch.zeros(3), torch.zeros(4))


def test_make_optimizer_forwards_eps_and_betas_and_rejects_bad_ones():
    from labkit.grokking import make_optimizer

    model = small_model()
    default = make_optimizer(model, "adamw", lr=1e-2, weight_decay=0.0)
    assert default.param_groups[0]["eps"] == 1e-8 and default.param_groups[0]["betas"] == (0.9, 0.98)
    for name in ("adamw", "perp_adamw", "grokfast_adamw"):
        opt = make_optimizer(model, name, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-25)
        group = opt.param_groups[0]
        assert group["eps"] == 1e-25 and group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0.0
    # eps=1e-25 against torch's 1e-8 once the gradient is tiny: the first AdamW step is ~lr, not ~lr * g / eps
    for eps, expected in ((1e-25, 1e-2), (1e-8, 1e-2 * 1e-12 / (1e-12 + 1e-8))):
        w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = make_optimizer(nn.ParameterList([w]), "adamw", lr=1e-2, weight_decay=0.0, eps=eps)
        w.grad = torch.full_like(w, 1e-12)
        opt.step()
        assert -w.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="eps"):
        make_optimizer(model, "sgd", lr=1e-2, eps=1e-25)
    with pytest.raises(ValueError, match="eps"):
        make_optimizer(model, "adamw", eps=-1.0)
    with pytest.raises(ValueError, match="betas"):
        make_optimizer(model, "adamw", betas=(0.9, 1.0))
