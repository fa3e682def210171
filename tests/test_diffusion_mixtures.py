"""Exact Gaussian-mixture quantities against autograd, Tweedie's formula and closed forms."""

import math

import pytest
import torch

from labkit.diffusion import GaussianMixture, ring_mixture


def full_cov_mixture(dtype=torch.float64) -> GaussianMixture:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(3, 2, 2, generator=gen, dtype=dtype)
    cov = a @ a.transpose(1, 2) + 0.1 * torch.eye(2, dtype=dtype)
    means = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.5, -0.5]], dtype=dtype)
    return GaussianMixture(means, cov, torch.tensor([0.5, 0.3, 0.2], dtype=dtype), labels=[0, 1, 1])


def diag_mixture(dtype=torch.float64) -> GaussianMixture:
    means = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.5, -0.5]], dtype=dtype)
    cov = torch.tensor([[0.5, 1.5], [1.0, 1.0], [2.0, 0.3]], dtype=dtype)
    return GaussianMixture(means, cov, torch.tensor([0.5, 0.3, 0.2], dtype=dtype), labels=[0, 1, 1])


def iso_mixture(dtype=torch.float64) -> GaussianMixture:
    means = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.5, -0.5]], dtype=dtype)
    return GaussianMixture(
        means, torch.tensor([0.5, 1.0, 2.0], dtype=dtype), torch.tensor([0.5, 0.3, 0.2], dtype=dtype), labels=[0, 1, 1]
    )


MIXTURES = {"full": full_cov_mixture, "diagonal": diag_mixture, "isotropic": iso_mixture}


def reference_log_prob(g: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    comps = [
        torch.distributions.MultivariateNormal(
            g.means[k], g.covariances[k] + sigma**2 * torch.eye(g.dim, dtype=x.dtype)
        )
        for k in range(g.num_components)
    ]
    return torch.logsumexp(torch.stack([c.log_prob(x) + g.weights[k].log() for k, c in enumerate(comps)], 1), 1)


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic"])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.7, 3.0, 40.0])
def test_log_prob_matches_torch_distributions(sigma, kind):
    g = MIXTURES[kind]()
    assert g.diagonal == (kind != "full") and g.isotropic == (kind == "isotropic")
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    torch.testing.assert_close(g.log_prob(x, sigma), reference_log_prob(g, x, sigma))


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic"])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 40.0])
def test_score_is_autograd_of_log_density(sigma, kind):
    g = MIXTURES[kind]()
    x = (torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3).requires_grad_()
    (auto,) = torch.autograd.grad(g.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(g.score(x.detach(), sigma), auto)
    for label in (0, 1):  # class-conditional scores too
        (auto_c,) = torch.autograd.grad(g.log_prob(x, sigma, label=label).sum(), x)
        torch.testing.assert_close(g.score(x.detach(), sigma, label=label), auto_c)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 5.0])
def test_denoiser_is_tweedie(sigma):
    g = full_cov_mixture()
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    torch.testing.assert_close(g.denoise(x, sigma), x + sigma**2 * g.score(x, sigma))


def test_denoiser_is_posterior_mean_by_monte_carlo():
    g = full_cov_mixture()
    gen = torch.Generator().manual_seed(0)
    x0 = g.sample(400_000, generator=gen)
    sigma = 1.0
    noisy = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    # E[D(x)] = E[x0] and E[(x0 - D) * f(x)] = 0 (orthogonality of the posterior mean)
    d = g.denoise(noisy, sigma)
    torch.testing.assert_close(d.mean(0), x0.mean(0), atol=0.01, rtol=0)
    resid = x0 - d
    torch.testing.assert_close((resid * noisy.tanh()).mean(0), torch.zeros(2, dtype=x0.dtype), atol=0.01, rtol=0)


def test_gaussian_denoiser_is_linear():
    mean, cov = (
        torch.tensor([[1.0, -2.0]], dtype=torch.float64),
        torch.tensor([[[2.0, 0.5], [0.5, 1.0]]], dtype=torch.float64),
    )
    g = GaussianMixture(mean, cov, torch.ones(1, dtype=torch.float64))
    x = torch.randn(10, 2, dtype=torch.float64)
    sigma = 0.8
    gain = cov[0] @ torch.linalg.inv(cov[0] + sigma**2 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(g.denoise(x, sigma), mean + (x - mean) @ gain.T)


def test_class_posterior_is_bayes_rule_and_conditional_mixture():
    g = full_cov_mixture()
    x = torch.randn(25, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    sigma = 0.9
    post = g.class_posterior(x, sigma)
    torch.testing.assert_close(post.sum(1), torch.ones(25, dtype=torch.float64))
    prior = g.class_prior()
    lik = torch.stack([g.conditional(c).log_prob(x, sigma) for c in range(2)], 1)
    torch.testing.assert_close(post, torch.softmax(lik + prior.log(), 1))
    # the conditional mixture's score equals the label-masked score
    torch.testing.assert_close(g.conditional(1).score(x, sigma), g.score(x, sigma, label=1))
    # Bayes for scores: grad log p(y|x) = score(x|y) - score(x)
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(g.log_class_posterior(xr, sigma)[:, 1].sum(), xr)
    torch.testing.assert_close(grad, g.score(x, sigma, label=1) - g.score(x, sigma))


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic"])
def test_sampling_moments_and_noisy_sampling(kind):
    g = MIXTURES[kind]()
    gen = torch.Generator().manual_seed(5)
    x = g.sample(200_000, generator=gen)
    torch.testing.assert_close(x.mean(0), g.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), g.covariance(), atol=0.05, rtol=0)
    noisy = g.sample(200_000, generator=gen, sigma=2.0)
    torch.testing.assert_close(
        torch.cov(noisy.T), g.covariance() + 4 * torch.eye(2, dtype=torch.float64), atol=0.08, rtol=0
    )
    approx = g.gaussian_approximation()
    torch.testing.assert_close(approx.covariance(), g.covariance())


def test_seeded_sampling_is_reproducible():
    g = ring_mixture()
    a = g.sample(100, generator=torch.Generator().manual_seed(7))
    b = g.sample(100, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_ring_mixture_layout():
    g = ring_mixture(2, 3, radius=4.0, spread=1.2)
    assert g.num_components == 6 and g.num_classes == 2
    torch.testing.assert_close(g.class_prior(), torch.tensor([0.5, 0.5]))
    norms = g.means.norm(dim=1)
    assert math.isclose(float(norms[0]), 2.8, rel_tol=1e-5)  # inner mode first


def test_clear_errors():
    g = full_cov_mixture()
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must have shape"):
        g.score(torch.zeros(4, 3, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        g.score(x, -1.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        g.denoise(x, 0.0)
    with pytest.raises(ValueError, match="sigma must be (a )?finite"):
        g.log_prob(x, float("nan"))
    with pytest.raises(ValueError, match="label must be a class index in"):
        g.score(x, 1.0, label=5)
    with pytest.raises(ValueError, match="label must be one of"):
        g.conditional(3)
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]), torch.ones(1))
    singular = GaussianMixture(torch.zeros(1, 2), torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match="singular"):
        singular.log_prob(x.float(), 0.0)
    torch.testing.assert_close(singular.denoise(x.float(), 1.0), torch.zeros(4, 2))


def test_linear_cfg_decomposition_sums_to_gaussian_cfg():
    from labkit.diffusion import cfg, cfg_decomposition, contrastive_components, gaussian_denoise

    gen = torch.Generator().manual_seed(11)
    d = 5
    a, b = torch.randn(d, d, generator=gen, dtype=torch.float64), torch.randn(d, d, generator=gen, dtype=torch.float64)
    cov_c, cov_u = (
        a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64),
        b @ b.T / d + 0.1 * torch.eye(d, dtype=torch.float64),
    )
    mean_c, mean_u = (
        torch.randn(d, generator=gen, dtype=torch.float64),
        torch.randn(d, generator=gen, dtype=torch.float64),
    )
    x = torch.randn(7, d, generator=gen, dtype=torch.float64)
    for sigma in (0.1, 1.0, 30.0):
        # each Gaussian denoiser equals the exact mixture denoiser of a one-component mixture
        g = GaussianMixture(mean_c[None], cov_c[None], torch.ones(1, dtype=torch.float64))
        cond = gaussian_denoise(x, sigma, mean_c, cov_c)
        torch.testing.assert_close(cond, g.denoise(x, sigma))
        uncond = gaussian_denoise(x, sigma, mean_u, cov_u)
        dec = cfg_decomposition(x, sigma, mean_c=mean_c, cov_c=cov_c, mean_u=mean_u, cov_u=cov_u)
        torch.testing.assert_close(dec.total, cond - uncond)
        torch.testing.assert_close(dec.guided_update(cond, 3.0), cfg(cond, uncond, 3.0))
        # the positive term lies in the span of positive eigen-directions, the negative one in the rest
        pos_dirs = dec.eigenvectors[:, dec.eigenvalues > 0]
        torch.testing.assert_close(dec.positive_cpc @ pos_dirs @ pos_dirs.T, dec.positive_cpc)
        assert (dec.negative_cpc @ pos_dirs).abs().max() < 1e-10
    # at high noise the eigenvectors are the contrastive principal components of cov_c - cov_u
    _, cpc = contrastive_components(cov_c, cov_u)
    dec = cfg_decomposition(x, 1e3, mean_c=mean_c, cov_c=cov_c, mean_u=mean_u, cov_u=cov_u)
    assert (dec.eigenvectors[:, -1] @ cpc[:, -1]).abs() > 0.999


def test_gaussian_teleport_matches_the_ode():
    from labkit.diffusion import gaussian_teleport, karras_sigmas, sample_ode

    mean = torch.tensor([1.0, -1.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    g = GaussianMixture(mean[None], cov[None], torch.ones(1, dtype=torch.float64))
    x = 20 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = karras_sigmas(200, sigma_min=1.0, sigma_max=20.0, append_zero=False, dtype=torch.float64)
    numeric = sample_ode(g, x, sig).samples
    torch.testing.assert_close(gaussian_teleport(x, 20.0, 1.0, mean, cov), numeric, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic"])
def test_per_sample_noise_levels(kind):
    g = MIXTURES[kind]()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64) * 2
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 0.3], dtype=torch.float64)
    rows = torch.cat([g.score(x[i : i + 1], float(sig[i])) for i in range(6)])
    torch.testing.assert_close(g.score(x, sig), rows)
    torch.testing.assert_close(
        g.log_prob(x, sig), torch.cat([g.log_prob(x[i : i + 1], float(sig[i])) for i in range(6)])
    )
