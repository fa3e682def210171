"""Samplers, guidance policies and metrics against exact mixture answers."""

import pytest
import torch

from labkit.diffusion import (
    CFG,
    AdaptiveGuidance,
    ClassifierGuidance,
    GaussianMixture,
    cfg,
    cfg_rescale,
    karras_sigmas,
    make_guidance,
    mmd2,
    mode_mass,
    precision_recall,
    ring_mixture,
    sample_ddim,
    sample_ddpm,
    sample_ode,
)

SMAX = 40.0


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def noise(n, *, seed=0, sigma=SMAX):
    """``sigma * randn(n, 2)``: the starting point of a sampler."""
    return sigma * torch.randn(n, 2, generator=gen(seed))


@pytest.fixture(scope="module")
def mixture():
    return ring_mixture(2, 3, radius=4.0, std=0.35, spread=1.2)


def mmd_noise_floor(g: GaussianMixture, n: int, seeds=range(3)) -> float:
    return max(
        abs(mmd2(g.sample(n, generator=gen(100 + s)), g.sample(n, generator=gen(200 + s)))) for s in seeds
    )


def test_karras_schedule():
    s = karras_sigmas(10, sigma_min=0.002, sigma_max=80.0)
    assert s.shape == (11,) and s[-1] == 0
    torch.testing.assert_close(s[[0, 9]], torch.tensor([80.0, 0.002]))
    r = s[:-1] ** (1 / 7)
    torch.testing.assert_close(r[1:] - r[:-1], (r[1] - r[0]).expand(9), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(5, sigma_min=1.0, sigma_max=0.5)


@pytest.mark.parametrize("kind", ["heun", "euler", "ddpm"])
def test_samplers_with_exact_denoiser_recover_mixture(mixture, kind):
    n = 1000
    c = mixture.conditional(0)
    x = c.sample(n, sigma=SMAX, generator=gen(1))
    if kind == "ddpm":
        res = sample_ddpm(
            mixture, x, karras_sigmas(128, sigma_min=0.005, sigma_max=SMAX), label=0, generator=gen(2)
        )
    else:
        steps = 32 if kind == "heun" else 128
        res = sample_ode(
            mixture, x, karras_sigmas(steps, sigma_min=0.005, sigma_max=SMAX), solver=kind, label=0
        )
    floor = mmd_noise_floor(c, n)
    assert mmd2(res.samples, c.sample(n, generator=gen(3))) < 3 * floor + 2e-4
    torch.testing.assert_close(
        mode_mass(res.samples, mixture)[:3], torch.full((3,), 1 / 3), atol=0.05, rtol=0
    )
    assert mode_mass(res.samples, mixture)[3:].sum() == 0


def test_unconditional_sampling_keeps_class_balance(mixture):
    x = mixture.sample(2000, sigma=SMAX, generator=gen(4))
    res = sample_ode(mixture, x, karras_sigmas(24, sigma_min=0.005, sigma_max=SMAX))
    mass = mode_mass(res.samples, mixture)
    torch.testing.assert_close(mass, torch.full((6,), 1 / 6), atol=0.04, rtol=0)


def test_nfe_counts(mixture):
    x = noise(10)
    sig = karras_sigmas(8, sigma_min=0.01, sigma_max=SMAX)
    assert sample_ode(mixture, x, sig, solver="heun").nfe == 2 * 8 - 1
    assert sample_ode(mixture, x, sig, solver="euler").nfe == 8
    assert sample_ddim(mixture, x, sig).nfe == 8
    assert sample_ode(mixture, x, sig, label=0, guidance=CFG(3.0)).nfe == 2 * (2 * 8 - 1)
    assert sample_ode(mixture, x, sig, label=0, guidance=CFG(1.0)).nfe == 2 * 8 - 1


def test_ddim_equals_euler(mixture):
    x = noise(50)
    sig = karras_sigmas(12, sigma_min=0.01, sigma_max=SMAX)
    torch.testing.assert_close(
        sample_ddim(mixture, x, sig, eta=0.0).samples, sample_ode(mixture, x, sig, solver="euler").samples
    )


def test_seeded_samplers_are_reproducible(mixture):
    x = noise(64, seed=9)
    sig = karras_sigmas(10, sigma_min=0.01, sigma_max=SMAX)
    a = sample_ddpm(mixture, x, sig, generator=gen(5)).samples
    b = sample_ddpm(mixture, x, sig, generator=gen(5)).samples
    c = sample_ddpm(mixture, x, sig, generator=gen(6)).samples
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cfg_convention():
    cond, uncond = torch.randn(5, 2), torch.randn(5, 2)
    torch.testing.assert_close(cfg(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(cfg(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


def test_cfg_w1_is_conditional_and_w0_unconditional(mixture):
    x = noise(200, seed=2)
    sig = karras_sigmas(10, sigma_min=0.01, sigma_max=SMAX)
    cond = sample_ode(mixture, x, sig, label=1)
    torch.testing.assert_close(sample_ode(mixture, x, sig, label=1, guidance=CFG(1.0)).samples, cond.samples)
    uncond = sample_ode(mixture, x, sig)
    torch.testing.assert_close(
        sample_ode(mixture, x, sig, label=1, guidance=CFG(0.0)).samples, uncond.samples
    )


def test_cfg_rescale():
    cond = torch.randn(6, 4)
    guided = 3 * cond + 1
    out = cfg_rescale(guided, cond, 1.0)
    torch.testing.assert_close(out.std(dim=1), cond.std(dim=1))
    torch.testing.assert_close(cfg_rescale(guided, cond, 0.0), guided)
    with pytest.raises(ValueError, match="phi must be"):
        cfg_rescale(guided, cond, 2.0)


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5])
def test_classifier_guidance_with_exact_classifier_equals_cfg(mixture, scale):
    x = noise(300, seed=3)
    sig = karras_sigmas(12, sigma_min=0.01, sigma_max=SMAX)
    cg = sample_ode(mixture, x, sig, label=0, guidance=ClassifierGuidance(mixture.classifier, scale))
    cf = sample_ode(mixture, x, sig, label=0, guidance=CFG(scale))
    torch.testing.assert_close(cg.samples, cf.samples, atol=1e-4, rtol=1e-4)


def test_classifier_guidance_leaves_model_grads_alone(mixture):
    clf = torch.nn.Linear(2, 2)
    for p in clf.parameters():
        p.grad = torch.ones_like(p)
    x = noise(20)
    sample_ode(
        mixture,
        x,
        karras_sigmas(4, sigma_min=0.1, sigma_max=SMAX),
        label=0,
        guidance=ClassifierGuidance(lambda z, s: clf(z), 2.0),
    )
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in clf.parameters())


def test_guidance_interval_reduces_nfe_as_recorded(mixture):
    x = noise(100, seed=4)
    sig = karras_sigmas(16, sigma_min=0.01, sigma_max=SMAX)
    policy = CFG(3.0, interval=(0.3, 5.0))
    res = sample_ode(mixture, x, sig, label=0, guidance=policy)
    guided_calls = sum(1 for r in res.guidance_trace if r["guided"])
    calls = len(res.guidance_trace)
    assert calls == 2 * 16 - 1
    expected_guided = sum(1 for r in res.guidance_trace if 0.3 < r["sigma"] <= 5.0)
    assert guided_calls == expected_guided and 0 < guided_calls < calls
    assert res.nfe == calls + guided_calls < sample_ode(mixture, x, sig, label=0, guidance=CFG(3.0)).nfe
    assert all((r["nfe"] == 2) == r["guided"] for r in res.guidance_trace)
    # an interval covering every level is full CFG
    full = sample_ode(mixture, x, sig, label=0, guidance=CFG(3.0, interval=(0.0, 1e9)))
    torch.testing.assert_close(full.samples, sample_ode(mixture, x, sig, label=0, guidance=CFG(3.0)).samples)


def test_adaptive_guidance_needs_warmup_and_reduces_nfe(mixture):
    x = mixture.conditional(0).sample(400, sigma=80.0, generator=gen(5))
    sig = karras_sigmas(32, sigma_min=0.01, sigma_max=80.0)
    naive = AdaptiveGuidance(3.0, threshold=0.98, warmup=0)
    res_naive = sample_ode(mixture, x, sig, label=0, guidance=naive)
    assert naive.switched_at == 0  # cosine ~1 at the highest noise: the naive test switches off at once
    policy = AdaptiveGuidance(3.0, threshold=0.999, warmup=8)
    res = sample_ode(mixture, x, sig, label=0, guidance=policy)
    full = sample_ode(mixture, x, sig, label=0, guidance=CFG(3.0))
    assert policy.switched_at is not None and policy.switched_at >= 8
    assert res_naive.nfe < res.nfe < full.nfe
    assert res.nfe == sum(r["nfe"] for r in res.guidance_trace)
    cos = [c for _, c in policy.cosines]
    assert len(cos) == sum(1 for r in res.guidance_trace if r["guided"])
    assert min(cos) < 0.999 and cos[-1] >= 0.999
    # the displacement from full CFG is small compared with the mixture's scale
    assert (res.samples - full.samples).norm(dim=1).mean() < 0.3


def test_trace_records_steps(mixture):
    x = noise(10)
    sig = karras_sigmas(6, sigma_min=0.01, sigma_max=SMAX)
    res = sample_ode(mixture, x, sig, trace=True)
    assert len(res.trace) == 6 and sum(r["nfe"] for r in res.trace) == res.nfe
    assert res.path().shape == (7, 10, 2)
    torch.testing.assert_close(res.path()[-1], res.samples)
    with pytest.raises(ValueError, match="trace=True"):
        sample_ode(mixture, x, sig).path()


def test_mode_mass_variants():
    g = ring_mixture(2, 3, radius=2.2, spread=1.4, std=0.6)  # overlapping classes
    x = g.conditional(0).sample(40_000, generator=gen(8))
    hard_all = mode_mass(x, g)
    assert hard_all[3] > 0.02  # overlap: some class-0 samples sit nearer class 1's inner mode
    for m in (mode_mass(x, g, label=0), mode_mass(x, g, label=0, soft=True)):
        torch.testing.assert_close(m[:3], torch.full((3,), 1 / 3), atol=0.01, rtol=0)
        assert m[3:].sum() == 0
    torch.testing.assert_close(mode_mass(x, g, soft=True).sum(), torch.tensor(1.0))


def test_metrics():
    a, b = torch.randn(500, 2, generator=gen(1)), torch.randn(500, 2, generator=gen(2))
    far = b + 3
    assert abs(mmd2(a, b)) < 0.01 < mmd2(a, far)
    p, r = precision_recall(a, b)
    assert p > 0.85 and r > 0.85
    collapsed = 0.05 * torch.randn(500, 2, generator=gen(3))  # high fidelity, no diversity
    p, r = precision_recall(a, collapsed)
    assert p > 0.9 and r < 0.2
    with pytest.raises(ValueError, match="feature size"):
        mmd2(a, torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        mmd2(a, torch.full((10, 2), float("nan")))


def test_clear_errors(mixture):
    x = noise(4)
    sig = karras_sigmas(4, sigma_min=0.01, sigma_max=SMAX)
    with pytest.raises(ValueError, match="unknown solver"):
        sample_ode(mixture, x, sig, solver="rk4")
    with pytest.raises(ValueError, match="unknown guidance policy"):
        make_guidance("autoguidance", 2.0)
    assert isinstance(make_guidance("cfg", 2.0), CFG)
    with pytest.raises(TypeError, match="guidance must be a GuidancePolicy"):
        sample_ode(mixture, x, sig, guidance="cfg")
    with pytest.raises(ValueError, match="needs a label"):
        sample_ode(mixture, x, sig, guidance=CFG(2.0))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ode(mixture, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="label must be"):
        sample_ode(mixture, x, sig, label=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="interval must satisfy"):
        CFG(2.0, interval=(5.0, 1.0))
    with pytest.raises(ValueError, match="warmup"):
        AdaptiveGuidance(2.0, warmup=-1)
    with pytest.raises(ValueError, match="eta must be"):
        sample_ddim(mixture, x, sig, eta=2.0)
