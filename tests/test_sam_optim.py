"""labkit.sam.optim: SAM / ASAM / norm-only SAM against hand-computed steps and the base optimizers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.sam import SAM, frozen_running_stats, norm_only_sam, norm_parameters
from labkit.training import fit


def small_net(seed: int = 0, norm: str = "batch") -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, 7)]
    if norm == "batch":
        layers.append(nn.BatchNorm1d(7))
    layers += [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def data(seed: int = 1, n: int = 24):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def make_closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def params_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("base_cls, kwargs", [
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    (torch.optim.Adam, dict(lr=1e-2)),
    (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
])
@pytest.mark.parametrize("adaptive", [False, True])
def test_rho_zero_is_the_base_optimizer_bit_for_bit(base_cls, kwargs, adaptive):
    x, y = data()
    a, b = small_net(), small_net()
    opt_a = base_cls(a.parameters(), **kwargs)
    opt_b = SAM(b.parameters(), base_cls, rho=0.0, adaptive=adaptive, model=b, **kwargs)
    for _ in range(6):
        la = opt_a.step(make_closure(a, opt_a, x, y))
        lb = opt_b.step(make_closure(b, opt_b, x, y))
        assert torch.equal(la, lb)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for ba, bb in zip(a.buffers(), b.buffers(), strict=True):
        assert torch.equal(ba, bb)


def test_rho_zero_with_dropout_consumes_the_same_randomness_as_the_base_optimizer():
    x, y = data()

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    a, b = net(), net()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.2)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.0, lr=0.2)
    torch.manual_seed(5)
    for _ in range(5):
        opt_a.step(make_closure(a, opt_a, x, y))
    torch.manual_seed(5)
    for _ in range(5):
        opt_b.step(make_closure(b, opt_b, x, y))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_rho_zero_manual_half_steps_match_the_base_optimizer():
    x, y = data()
    a, b = small_net(norm="none"), small_net(norm="none")
    opt_a = torch.optim.SGD(a.parameters(), lr=0.3, momentum=0.5)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.0, lr=0.3, momentum=0.5)
    for _ in range(4):
        opt_a.step(make_closure(a, opt_a, x, y))
        make_closure(b, opt_b, x, y)()
        opt_b.first_step(zero_grad=True)
        make_closure(b, opt_b, x, y)()
        opt_b.second_step(zero_grad=True)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("rho", [0.01, 0.5, 3.0])
def test_perturbation_has_norm_rho_and_gradient_direction(rho):
    x, y = data()
    m = small_net(norm="none")
    opt = SAM(m.parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    before = params_of(m)
    make_closure(m, opt, x, y)()
    grads = [p.grad.clone() for p in m.parameters()]
    opt.first_step()
    e = torch.cat([(p.detach() - w).flatten() for p, w in zip(m.parameters(), before, strict=True)]).double()
    g = torch.cat([gr.flatten() for gr in grads]).double()
    assert torch.linalg.vector_norm(e).item() == pytest.approx(rho, rel=1e-5)
    torch.testing.assert_close(e, rho * g / g.norm(), rtol=1e-4, atol=1e-6 * rho)
    opt.restore()
    for p, w in zip(m.parameters(), before, strict=True):
        assert torch.equal(p, w)


@pytest.mark.parametrize("eta", [0.0, 0.01])
def test_asam_perturbation_has_scaled_norm_rho(eta):
    x, y = data()
    m = small_net(norm="none")
    rho = 0.2
    opt = SAM(m.parameters(), torch.optim.SGD, rho=rho, adaptive=True, adaptive_eta=eta, lr=0.1)
    before = params_of(m)
    make_closure(m, opt, x, y)()
    grads = [p.grad.clone() for p in m.parameters()]
    opt.first_step()
    t = torch.cat([(w.abs() + eta).flatten() for w in before]).double()
    e = torch.cat([(p.detach() - w).flatten() for p, w in zip(m.parameters(), before, strict=True)]).double()
    g = torch.cat([gr.flatten() for gr in grads]).double()
    assert torch.linalg.vector_norm(e / t).item() == pytest.approx(rho, rel=1e-4)
    expected = rho * t**2 * g / torch.linalg.vector_norm(t * g)  # Kwon et al. (2021), eq. (9)
    torch.testing.assert_close(e, expected, rtol=1e-3, atol=1e-7)


def test_sam_step_matches_a_hand_written_update_and_restores_exactly():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    h = a @ a.T + torch.eye(6, dtype=torch.float64)
    w = nn.Parameter(torch.randn(6, dtype=torch.float64))
    lr, rho = 0.05, 0.3
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ h @ w
        loss.backward()
        return loss

    for _ in range(3):
        w0 = w.detach().clone()
        g = h @ w0
        expected = w0 - lr * (h @ (w0 + rho * g / g.norm()))
        loss = opt.step(closure)
        assert loss.item() == pytest.approx((0.5 * w0 @ h @ w0).item())  # loss at the unperturbed weights
        torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)
    # lr = 0: the weights come back bit for bit after a full step
    opt.param_groups[0]["lr"] = 0.0
    w0 = w.detach().clone()
    opt.step(closure)
    assert torch.equal(w.detach(), w0)


def test_gradient_free_and_frozen_parameters_are_skipped():
    m = small_net(norm="none")
    extra = nn.Parameter(torch.ones(4))  # never used in the loss: grad stays None
    m[0].bias.requires_grad_(False)
    opt = SAM([p for p in m.parameters() if p.requires_grad] + [extra], torch.optim.SGD, rho=0.1, lr=0.1)
    x, y = data()
    make_closure(m, opt, x, y)()
    before = params_of(m)
    opt.first_step()
    assert torch.equal(extra, torch.ones(4))
    assert torch.equal(m[0].bias, before[1])
    e = torch.cat([(p.detach() - w).flatten() for p, w in zip(m.parameters(), before, strict=True)])
    assert torch.linalg.vector_norm(e).item() == pytest.approx(0.1, rel=1e-5)
    opt.second_step()


def test_zero_gradient_gives_no_perturbation_and_no_nan():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.1, adaptive=True, lr=0.1)
    w.grad = torch.zeros(2)
    opt.first_step()
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0]))
    opt.second_step()
    assert torch.isfinite(w).all()


def test_ascent_weight_decay_option():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    cases = [(False, torch.tensor([1.0, 0.0])), (True, torch.tensor([1.0 + 0.5 * 3, 0.5 * 4]))]
    for flag, direction in cases:
        opt = SAM([w], torch.optim.SGD, rho=0.2, lr=0.0, weight_decay=0.5, ascent_weight_decay=flag)
        w.grad = torch.tensor([1.0, 0.0])
        opt.first_step()
        torch.testing.assert_close(w.detach() - torch.tensor([3.0, 4.0]), 0.2 * direction / direction.norm())
        opt.restore()


def test_scheduler_and_state_dict_round_trip():
    x, y = data()
    m = small_net()
    opt = SAM(m.parameters(), torch.optim.SGD, rho=0.1, lr=0.2, momentum=0.9, model=m)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.step(make_closure(m, opt, x, y))
        sched.step()
    # the scheduler drives the base step
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    state = copy.deepcopy(opt.state_dict())
    assert any("momentum_buffer" in s for s in state["state"].values())  # base state is saved
    sched_state = sched.state_dict()
    m2 = copy.deepcopy(m)
    opt2 = SAM(m2.parameters(), torch.optim.SGD, rho=0.7, lr=1.0, momentum=0.9, model=m2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    opt2.load_state_dict(state)
    sched2.load_state_dict(sched_state)
    assert opt2.param_groups is opt2.base_optimizer.param_groups and opt2.param_groups[0]["rho"] == 0.1
    for _ in range(3):
        opt.step(make_closure(m, opt, x, y))
        sched.step()
        opt2.step(make_closure(m2, opt2, x, y))
        sched2.step()
    for p1, p2 in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_add_param_group_reaches_the_base_optimizer():
    m = small_net(norm="none")
    opt = SAM(m[0].parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": m[2].parameters(), "lr": 0.01})
    assert len(opt.base_optimizer.param_groups) == 2 and opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[1]["rho"] == 0.2 and opt.param_groups[1]["momentum"] == 0.9
    x, y = data()
    before = m[2].weight.detach().clone()
    opt.step(make_closure(m, opt, x, y))
    assert not torch.equal(before, m[2].weight)
    with pytest.raises(ValueError, match="rho"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "rho": -1.0})


def test_batchnorm_running_stats_follow_the_first_pass_only():
    x, y = data()
    ref = small_net()
    ref.train()
    with torch.no_grad():
        ref(x)  # one forward at the unperturbed weights
    for bn, expect_equal in [("first", True), ("both", False)]:
        m = small_net()
        opt = SAM(m.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, model=m, bn=bn)
        opt.step(make_closure(m, opt, x, y))
        same = all(torch.equal(a, b) for a, b in zip(ref.buffers(), m.buffers(), strict=True))
        assert same is expect_equal
    m = small_net()
    before = [b.clone() for b in m.buffers()]
    with frozen_running_stats(m):
        m(x)
    assert all(torch.equal(a, b) for a, b in zip(before, m.buffers(), strict=True))


class NameTrap(nn.Module):
    """Norm layers with misleading names and a Linear called 'bn': selection must go by type."""

    def __init__(self):
        super().__init__()
        self.bn = nn.Linear(4, 8)
        self.fc = nn.BatchNorm1d(8)
        self.proj = nn.Linear(8, 8)
        self.dense = nn.LayerNorm(8)
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.weight_norm = nn.GroupNorm(2, 4)
        self.frozen = nn.LayerNorm(8, elementwise_affine=False)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        h = self.frozen(self.dense(self.proj(torch.relu(self.fc(self.bn(x))))))
        h = self.weight_norm(self.conv(h[:, None, :]))
        return self.head(h.flatten(1))


def test_norm_only_selection_by_module_type():
    m = NameTrap()
    chosen = {id(p) for p in norm_parameters(m)}
    expected = {id(p) for mod in (m.fc, m.dense, m.weight_norm) for p in (mod.weight, mod.bias)}
    assert chosen == expected
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4))
    assert {id(p) for p in norm_parameters(cnn)} == {id(cnn[1].weight), id(cnn[1].bias),
                                                      id(cnn[3].weight), id(cnn[3].bias)}


def test_norm_only_sam_perturbs_norm_params_and_updates_all():
    torch.manual_seed(0)
    m = NameTrap()
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    rho = 0.3
    opt = norm_only_sam(m, torch.optim.SGD, rho=rho, lr=0.1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    make_closure(m, opt, x, y)()
    opt.first_step()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"fc.weight", "fc.bias", "dense.weight", "dense.bias",
                     "weight_norm.weight", "weight_norm.bias"}
    e = torch.cat([(p.detach() - before[n]).flatten() for n, p in m.named_parameters()])
    assert torch.linalg.vector_norm(e).item() == pytest.approx(rho, rel=1e-5)
    make_closure(m, opt, x, y)()
    opt.second_step()
    unchanged = {n for n, p in m.named_parameters() if torch.equal(p, before[n])}
    assert unchanged <= {"bn.bias"}, unchanged  # descent updates all (a bias feeding BatchNorm has zero grad)


def test_fit_drives_sam_through_its_closure():
    x, y = data(n=40)
    m = small_net()
    opt = SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.2, model=m)
    hist = fit(m, lambda model, b: F.cross_entropy(model(b[0]), b[1]), (x, y), optimizer=opt, steps=30,
               progress=False)
    assert len(hist.loss) == 30 and hist.loss[-1] < hist.loss[0]


def test_clear_errors():
    m = small_net()
    with pytest.raises(ValueError, match="rho"):
        SAM(m.parameters(), torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        SAM(m.parameters(), torch.optim.SGD, rho=float("nan"), lr=0.1)
    with pytest.raises(ValueError, match="params is empty"):
        SAM([], torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="base_optimizer_cls"):
        SAM(m.parameters(), "sgd", lr=0.1)
    with pytest.raises(ValueError, match="bn"):
        SAM(m.parameters(), torch.optim.SGD, bn="second", lr=0.1)
    with pytest.raises(ValueError, match="perturb"):
        SAM(list(m.parameters())[:1], torch.optim.SGD, perturb=list(m.parameters())[1:], lr=0.1)
    with pytest.raises(ValueError, match="normalization"):
        norm_only_sam(small_net(norm="none"), torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="closure"):
        SAM(m.parameters(), torch.optim.SGD, lr=0.1).step()
    with pytest.raises(TypeError, match="model"):
        norm_parameters("net")
