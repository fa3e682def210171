"""The notebooks' experiments (guided runs, sweeps, the trained mixture denoiser, denoiser gaps,
teleportation), the linear-Gaussian model, the common sampler signature and the structured results."""

import pytest
import torch

from labkit.diffusion import (
    CFG,
    SAMPLERS,
    AdaptiveGuidance,
    LinearGaussianModel,
    MixtureSample,
    PrecisionRecall,
    cfg_decomposition,
    contrastive_components,
    denoiser_gaps,
    displacement,
    gaussian_denoise,
    gaussian_fit,
    gaussian_teleport,
    get_sampler,
    guidance_sweep,
    guided_run,
    karras_sigmas,
    mmd2,
    mode_mass,
    precision_recall,
    ring_mixture,
    sample_ddim,
    sample_euler,
    sample_heun,
    sample_ode,
    teleport_sweep,
    train_mixture_denoiser,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mixture():
    return ring_mixture(2, 3, radius=2.2, spread=1.4, std=0.6)


@pytest.fixture(scope="module")
def sigmas():
    return karras_sigmas(12, sigma_min=0.01, sigma_max=80.0)


def test_samplers_share_one_signature(mixture, sigmas):
    x = mixture.conditional(0).sample(50, sigma=80.0, generator=gen(1))
    for name, sampler in SAMPLERS.items():
        out = sampler(mixture, x, sigmas, label=0, guidance=CFG(2.0), generator=gen(2), trace=False)
        assert out.samples.shape == x.shape and out.nfe > 0, name
        assert get_sampler(name) is sampler and get_sampler(sampler) is sampler
    torch.testing.assert_close(sample_heun(mixture, x, sigmas).samples, sample_ode(mixture, x, sigmas).samples)
    torch.testing.assert_close(sample_euler(mixture, x, sigmas).samples, sample_ddim(mixture, x, sigmas).samples)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("rk45")


def test_guided_run_matches_sampler_and_metrics(mixture, sigmas):
    target = mixture.conditional(0)
    x = target.sample(400, sigma=80.0, generator=gen(3))
    reference = target.sample(400, generator=gen(4))
    policy = CFG(3.0, interval=(0.1, 1.0))
    r = guided_run(mixture, x, sigmas, policy, label=0, reference=reference)
    out = sample_ode(mixture, x, sigmas, label=0, guidance=CFG(3.0, interval=(0.1, 1.0)))
    torch.testing.assert_close(r.samples, out.samples)
    assert r.nfe == out.nfe and r.guidance is policy
    assert r.modes == mode_mass(out.samples, mixture, label=0)[:3].tolist()
    assert r.confidence == pytest.approx(mixture.class_posterior(out.samples, 0.0)[:, 0].mean().item())
    assert r.mmd2 == pytest.approx(mmd2(out.samples, reference))
    assert (r.precision, r.recall) == pytest.approx(tuple(precision_recall(reference, out.samples)))
    bare = guided_run(mixture, x, sigmas, label=0)
    assert bare.mmd2 is None and bare.precision is None and bare.guidance is None
    with pytest.raises(AttributeError):
        r.nfe = 0  # frozen result


def test_guidance_sweep_keeps_keys_and_denoiser(mixture, sigmas):
    x = mixture.conditional(0).sample(200, sigma=80.0, generator=gen(5))
    policies = {1.0: CFG(1.0), 3.0: CFG(3.0), "adaptive": AdaptiveGuidance(3.0, warmup=4)}
    runs = guidance_sweep(mixture, x, sigmas, policies, label=0)
    assert list(runs) == [1.0, 3.0, "adaptive"]
    assert runs[1.0].nfe < runs["adaptive"].nfe < runs[3.0].nfe
    assert runs[3.0].modes[0] < runs[1.0].modes[0]  # guidance everywhere empties the inner mode
    assert runs["adaptive"].guidance.switched_at is not None
    # another denoiser (here the unconditional-only mixture trick: label ignored) is used when given
    calls = []

    def spy(z, s, label=None):
        calls.append(label is None)
        return mixture(z, s, label)

    guidance_sweep(mixture, x, sigmas, {"cfg": CFG(2.0)}, label=0, denoiser=spy, sampler="euler")
    assert len(calls) == 2 * 12 and any(calls) and not all(calls)
    with pytest.raises(ValueError, match="non-empty mapping"):
        guidance_sweep(mixture, x, sigmas, {}, label=0)
    with pytest.raises(TypeError, match="mixture must be a GaussianMixture"):
        guided_run(spy, x, sigmas, label=0)
    with pytest.raises(TypeError, match="label must be an int"):
        guided_run(mixture, x, sigmas, label=torch.tensor(0))


def test_guided_run_stochastic_sampler_uses_its_generator(mixture, sigmas):
    x = mixture.conditional(0).sample(100, sigma=80.0, generator=gen(8))
    state = torch.get_rng_state()
    a = guided_run(mixture, x, sigmas, CFG(2.0), label=0, sampler="ddpm", generator=gen(9))
    b = guided_run(mixture, x, sigmas, CFG(2.0), label=0, sampler="ddpm", generator=gen(9))
    c = guided_run(mixture, x, sigmas, CFG(2.0), label=0, sampler="ddpm", generator=gen(10))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as found
    torch.testing.assert_close(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    expected = sample_ddim(mixture, x, sigmas, eta=1.0, label=0, guidance=CFG(2.0), generator=gen(9)).samples
    torch.testing.assert_close(a.samples, expected)
    runs = guidance_sweep(mixture, x, sigmas, {"a": CFG(2.0)}, label=0, sampler="ddpm", generator=gen(9))
    torch.testing.assert_close(runs["a"].samples, a.samples)
    with pytest.raises(TypeError, match="generator"):
        guided_run(mixture, x, sigmas, label=0, sampler="ddpm", generator=7)


def test_train_mixture_denoiser_is_reproducible_and_leaves_global_rng(mixture):
    state = torch.get_rng_state()
    model, history = train_mixture_denoiser(mixture, n=500, steps=40, hidden=16, depth=1, generator=gen(7),
                                            progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    again = train_mixture_denoiser(mixture, n=500, steps=40, hidden=16, depth=1, generator=gen(7), progress=False)
    assert again.history.loss == history.loss
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.model.parameters(), strict=True))
    other = train_mixture_denoiser(mixture, n=500, steps=40, hidden=16, depth=1, generator=gen(8), progress=False)
    assert other.history.loss != history.loss
    assert not model.training and model.num_classes == 2 and model.dim == 2
    with pytest.raises(TypeError, match="generator"):
        train_mixture_denoiser(mixture, steps=1, generator=7)


def test_denoiser_gaps(mixture):
    probe = mixture.sample(300, generator=gen(9))
    mean, cov = mixture.mean(), mixture.covariance()
    denoisers = {"exact": mixture.denoise, "same": mixture.denoise,
                 "Gaussian": lambda x, s: gaussian_denoise(x, s, mean, cov)}
    res = denoiser_gaps(probe, [0.1, 40.0], denoisers, [("exact", "same"), ("exact", "Gaussian")], reference="exact",
                        generator=gen(10))
    assert res.noise_levels == [0.1, 40.0] and res.gaps["exact vs same"] == [0.0, 0.0]
    low, high = res.gaps["exact vs Gaussian"]
    assert high < 0.05 < low  # Gaussian at high noise, not at low noise (Wang & Vastola, 2024)
    again = denoiser_gaps(probe, [0.1, 40.0], denoisers, [("exact", "Gaussian")], reference="exact",
                          generator=gen(10))
    assert again.gaps["exact vs Gaussian"] == res.gaps["exact vs Gaussian"]
    with pytest.raises(ValueError, match="reference must be one of"):
        denoiser_gaps(probe, [1.0], denoisers, [("exact", "same")], reference="trained")
    with pytest.raises(ValueError, match="pairs must name"):
        denoiser_gaps(probe, [1.0], denoisers, [("exact", "trained")], reference="exact")


def test_teleport_sweep(mixture):
    sig = karras_sigmas(16, sigma_min=0.01, sigma_max=80.0)
    mean, cov = mixture.mean(), mixture.covariance()
    x = 80.0 * torch.randn(300, 2, generator=gen(11))
    reference = mixture.sample(300, generator=gen(12))
    runs = teleport_sweep({"exact": mixture}, x, sig, [0, 4], mean=mean, cov=cov, reference=reference)
    full = sample_ode(mixture, x, sig)
    torch.testing.assert_close(runs["exact", 0].samples, full.samples)
    jumped = sample_ode(mixture, gaussian_teleport(x, 80.0, sig[4].item(), mean, cov), sig[4:])
    torch.testing.assert_close(runs["exact", 4].samples, jumped.samples)
    assert runs["exact", 4].nfe == full.nfe - 8 and runs["exact", 4].sigma == sig[4].item()
    assert runs["exact", 4].mmd2 == pytest.approx(mmd2(jumped.samples, reference))
    with pytest.raises(ValueError, match="skips must be"):
        teleport_sweep({"exact": mixture}, x, sig, [16], mean=mean, cov=cov, reference=reference)


def test_linear_gaussian_model():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    y = torch.randint(0, 3, (300,), generator=g)
    x = x + y[:, None].double()
    model = LinearGaussianModel(x, y, ridge=1e-3)
    mean_c, cov_c = model.class_fit(1)
    ref_c = gaussian_fit(x[y == 1], ridge=1e-3)
    torch.testing.assert_close(mean_c, ref_c.mean)
    torch.testing.assert_close(cov_c, torch.cov(x[y == 1].T) + 1e-3 * torch.eye(4, dtype=torch.float64))
    mean_u, cov_u = model.unconditional
    probe = x[:20] + 0.7 * torch.randn(20, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(model(probe, 0.7), gaussian_denoise(probe, 0.7, mean_u, cov_u))
    torch.testing.assert_close(model(probe, torch.full((20,), 0.7, dtype=torch.float64), 1),
                               gaussian_denoise(probe, 0.7, mean_c, cov_c))
    dec = model.decomposition(probe, 0.7, 1)
    ref = cfg_decomposition(probe, 0.7, mean_c=mean_c, cov_c=cov_c, mean_u=mean_u, cov_u=cov_u)
    torch.testing.assert_close(dec.total, ref.total)
    torch.testing.assert_close(dec.total, model(probe, 0.7, 1) - model(probe, 0.7))
    evals, evecs = contrastive_components(cov_c, cov_u)
    assert evals.shape == (4,) and evecs.shape == (4, 4)
    with pytest.raises(ValueError, match="one noise level"):
        model(probe, torch.linspace(0.5, 1.0, 20, dtype=torch.float64))
    with pytest.raises(ValueError, match="labels must be"):
        LinearGaussianModel(x, y.double())
    with pytest.raises(ValueError, match="ridge"):
        gaussian_fit(x, ridge=-1.0)


def test_structured_results_and_deprecated_flag(mixture):
    s = mixture.sample_components(100, generator=gen(14))
    assert isinstance(s, MixtureSample)
    x, comp = s
    torch.testing.assert_close(x, mixture.sample(100, generator=gen(14)))
    with pytest.warns(DeprecationWarning, match="sample_components"):
        old_x, old_comp = mixture.sample(100, generator=gen(14), return_components=True)
    assert torch.equal(old_x, x) and torch.equal(old_comp, comp)
    pr = precision_recall(x[:50], x[50:])
    assert isinstance(pr, PrecisionRecall) and pr.precision == pr[0] and pr.recall == pr[1]
    assert displacement(x, x) == 0.0
    assert displacement(x, x + torch.tensor([3.0, 4.0])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="same shape"):
        displacement(x, x[:10])
    with pytest.raises(TypeError, match="generator"):
        mixture.sample(5, generator=3)
