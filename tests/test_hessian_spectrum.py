"""top_eigenvalues / hutchinson_trace / spectral_density against a materialised Hessian."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.data import digits
from labkit.hessian import (
    DenseOperator,
    HessianOperator,
    exact_hessian,
    hutchinson_trace,
    lanczos,
    spectral_density,
    top_eigenvalues,
)
from labkit.models import mlp

torch.set_num_threads(1)


# a materialised symmetric matrix as an operator (to test the algorithms alone)
Dense = DenseOperator


@pytest.fixture(scope="module")
def digits_problem():
    torch.manual_seed(0)
    split = digits(seed=0)
    x, y = split.train_x[:400], split.train_y[:400]
    model = mlp(64, [12], 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    hess = exact_hessian(model, F.cross_entropy, (x, y))
    return model, x, y, hess, torch.linalg.eigvalsh(hess).flip(0)


def test_lanczos_defaults_top3_of_digits_mlp_to_1e4(digits_problem):
    model, x, y, _, exact = digits_problem
    op = HessianOperator(model, F.cross_entropy, (x, y))  # float32, default backend
    res = top_eigenvalues(op, k=3, generator=torch.Generator().manual_seed(0))
    rel = (res.eigenvalues.double() - exact[:3]).abs() / exact[:3].abs()
    assert rel.max() < 1e-4, rel
    assert res.converged and res.residuals.shape == (3,) and (res.residuals < 1e-4).all()
    assert res.eigenvectors.shape == (op.numel, 3)
    gram = res.eigenvectors.double().T @ res.eigenvectors.double()
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(res.eigenvalues[:-1] >= res.eigenvalues[1:])


def test_power_iteration_with_deflation_matches(digits_problem):
    model, x, y, hess, exact = digits_problem
    res = top_eigenvalues(
        Dense(hess), k=2, method="power", max_iter=3000, tol=1e-5, generator=torch.Generator().manual_seed(1)
    )
    rel = (res.eigenvalues - exact[:2]).abs() / exact[:2]
    assert rel.max() < 1e-6 and res.converged


def test_lanczos_on_matrix_with_known_spectrum_and_negative_eigenvalues():
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    spectrum = torch.cat(
        [
            torch.tensor([10.0, 5.0, 4.0, -12.0], dtype=torch.float64),
            torch.linspace(-1, 1, 56, dtype=torch.float64),
        ]
    )
    a = q @ torch.diag(spectrum) @ q.T
    res = top_eigenvalues(Dense(a), k=3, generator=g)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([10.0, 5.0, 4.0], dtype=torch.float64))
    mag = top_eigenvalues(Dense(a), k=1, which="magnitude", generator=g)
    torch.testing.assert_close(mag.eigenvalues, torch.tensor([-12.0], dtype=torch.float64))
    # k equal to the dimension exhausts the Krylov space and still returns everything
    small = Dense(a[:5, :5])
    full = top_eigenvalues(small, k=5, generator=g)
    torch.testing.assert_close(full.eigenvalues, torch.linalg.eigvalsh(a[:5, :5]).flip(0))


def test_unconverged_is_reported_not_hidden(digits_problem):
    *_, hess, _ = digits_problem
    res = top_eigenvalues(Dense(hess), k=3, max_iter=4, generator=torch.Generator().manual_seed(0))
    assert not res.converged and res.residuals.max() > 1e-5


def test_same_numbers_twice_with_same_generator(digits_problem):
    model, x, y, *_ = digits_problem
    runs = []
    for _ in range(2):
        op = HessianOperator(model, F.cross_entropy, (x, y))
        eig = top_eigenvalues(op, k=2, generator=torch.Generator().manual_seed(5))
        tr = hutchinson_trace(op, samples=10, generator=torch.Generator().manual_seed(5))
        runs.append((eig.eigenvalues, tr.estimate))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_three_standard_errors(digits_problem, method):
    model, x, y, hess, _ = digits_problem
    op = HessianOperator(model, F.cross_entropy, (x, y))
    res = hutchinson_trace(op, samples=90, method=method, generator=torch.Generator().manual_seed(2))
    true = float(hess.trace())
    assert res.stderr > 0
    assert abs(res.estimate - true) < 3 * res.stderr, (res.estimate, true, res.stderr)
    assert res.samples == 90


def test_hutchpp_has_smaller_error_on_a_spiky_spectrum():
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([100.0, 80.0, 60.0, 50.0]), torch.rand(196, generator=g)]).double()
    a = Dense(q @ torch.diag(spectrum) @ q.T)
    plain = hutchinson_trace(a, samples=60, generator=torch.Generator().manual_seed(0))
    plus = hutchinson_trace(a, samples=60, method="hutch++", generator=torch.Generator().manual_seed(0))
    assert plus.stderr < plain.stderr / 5
    assert abs(plus.estimate - spectrum.sum()) < 3 * plus.stderr + 1e-9


def test_density_integrates_to_one_and_mean_is_trace_over_p(digits_problem):
    model, x, y, hess, exact = digits_problem
    op = HessianOperator(model, F.cross_entropy, (x, y))
    dens = spectral_density(op, vectors=8, steps=60, generator=torch.Generator().manual_seed(0))
    assert abs(dens.integral() - 1) < 1e-3
    assert dens.nodes.shape == (8, 60) and dens.weights.shape == (8, 60)
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(8, dtype=torch.float64))
    # mean over probes of v^T H v / ||v||^2 is unbiased for trace / P; allow 3 standard errors of the probes
    per_probe = (dens.nodes * dens.weights).sum(dim=1)
    se = float(per_probe.std() / math.sqrt(8))
    assert abs(dens.mean - float(hess.trace()) / op.numel) < 3 * se + 1e-6
    # extreme Ritz values converge to the extreme eigenvalues
    assert abs(float(dens.nodes.max()) - float(exact[0])) < 1e-4 * float(exact[0])
    # vectorised broadening equals the explicit double loop
    grid = torch.linspace(-0.1, float(exact[0]) + 0.1, 50, dtype=torch.float64)
    d2 = spectral_density(
        op, vectors=2, steps=20, grid=grid, sigma=0.05, generator=torch.Generator().manual_seed(1)
    )
    loop = torch.zeros(50, dtype=torch.float64)
    for i in range(2):
        for j in range(20):
            loop += (
                d2.weights[i, j]
                * torch.exp(-0.5 * ((grid - d2.nodes[i, j]) / 0.05) ** 2)
                / (0.05 * math.sqrt(2 * math.pi))
                / 2
            )
    torch.testing.assert_close(d2.density, loop)


def test_spectrum_errors(digits_problem):
    *_, hess, _ = digits_problem
    op = Dense(hess[:10, :10])
    with pytest.raises(ValueError, match="larger than the operator dimension"):
        top_eigenvalues(op, k=11)
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(op, k=0)
    with pytest.raises(ValueError, match="method"):
        top_eigenvalues(op, method="arnoldi")
    with pytest.raises(ValueError, match="samples"):
        hutchinson_trace(op, samples=1)
    with pytest.raises(ValueError, match="steps"):
        spectral_density(op, vectors=2, steps=11)
    with pytest.raises(TypeError, match="op must be"):
        top_eigenvalues(hess)


def _spectrum_matrix(seed, spectrum):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("which", ["largest", "magnitude"])
def test_lanczos_residuals_are_the_true_residuals_without_a_check_product(which):
    spectrum = torch.cat([torch.tensor([9.0, 6.0, -11.0, 5.5]), torch.linspace(-2, 2, 76)])
    a = _spectrum_matrix(12, spectrum)
    for k, tol in ((1, 1e-5), (3, 1e-8), (2, 1e-2)):
        op = Dense(a)
        calls = []
        op.matvec = lambda v, calls=calls: calls.append(1) or a @ v
        res = top_eigenvalues(op, k=k, tol=tol, which=which, generator=torch.Generator().manual_seed(k))
        # Lanczos spends one product per iteration and none to check
        assert res.matvecs == res.iterations == len(calls)
        vecs, vals = res.eigenvectors, res.eigenvalues
        true = (a @ vecs - vecs * vals).norm(dim=0) / vals.abs()
        torch.testing.assert_close(res.residuals, true, rtol=1e-6, atol=1e-13)
        assert res.converged == bool((true <= tol).all()) and res.converged
        torch.testing.assert_close(vecs.T @ vecs, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
        # every eigenvalue is within its residual of the spectrum (the guarantee behind tol)
        for val, r in zip(vals, res.residuals, strict=True):
            assert (spectrum.double() - val).abs().min() <= r * val.abs() + 1e-12
        key = vals if which == "largest" else vals.abs()
        assert torch.all(key[:-1] >= key[1:])
    top = top_eigenvalues(Dense(a), k=2, which=which, generator=torch.Generator().manual_seed(0))
    expected = [9.0, 6.0] if which == "largest" else [-11.0, 9.0]
    torch.testing.assert_close(top.eigenvalues, torch.tensor(expected, dtype=torch.float64))


def test_krylov_space_smaller_than_k_falls_back_to_power_iteration():
    # only two distinct eigenvalues: the Krylov space of a start vector has dimension 2 < k = 3
    a = _spectrum_matrix(13, [4.0, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    res = top_eigenvalues(Dense(a), k=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.eigenvalues, torch.tensor([4.0, 4.0, 4.0], dtype=torch.float64))
    assert res.converged and res.eigenvectors.shape == (8, 3)


def test_public_lanczos_gives_an_orthonormal_basis_and_its_tridiagonal():
    a = _spectrum_matrix(14, torch.linspace(0.1, 3.0, 50))
    v0 = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alphas, betas, basis, last = lanczos(Dense(a), v0, 20)
    assert alphas.shape == (20,) and betas.shape == (19,) and basis.shape == (50, 20) and last > 0
    torch.testing.assert_close(basis.T @ basis, torch.eye(20, dtype=torch.float64), atol=1e-12, rtol=0)
    tri = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
    torch.testing.assert_close(basis.T @ a @ basis, tri, atol=1e-10, rtol=0)
    torch.testing.assert_close(basis[:, 0], v0 / v0.norm())
    # a stop rule sees the coefficients so far and ends the run
    alphas, betas, basis, _ = lanczos(Dense(a), v0, 20, stop_when=lambda al, be, b: len(al) == 5)
    assert alphas.shape == (5,) and betas.shape == (4,) and basis.shape == (50, 5)
    # the whole space: an invariant subspace reports a last beta of 0
    alphas, _, basis, last = lanczos(Dense(a[:6, :6]), v0[:6], 6)
    assert last == 0.0 and basis.shape == (6, 6)


def test_non_finite_products_raise_in_every_algorithm():
    class Broken(Dense):
        def matvec(self, v):
            out = self.matrix @ v
            out[3] = float("nan")
            return out

    op = Broken(_spectrum_matrix(15, torch.linspace(1, 2, 20)))
    for call in (
        lambda: top_eigenvalues(op, k=2),
        lambda: top_eigenvalues(op, k=1, method="power"),
        lambda: spectral_density(op, vectors=1, steps=5),
        lambda: hutchinson_trace(op, samples=4),
    ):
        with pytest.raises(FloatingPointError, match="non-finite"):
            call()


def test_max_iter_below_k_still_returns_k_pairs():
    a = _spectrum_matrix(16, torch.cat([torch.tensor([7.0, 5.0, 3.0]), torch.linspace(-1, 1, 27)]))
    res = top_eigenvalues(Dense(a), k=3, max_iter=2, generator=torch.Generator().manual_seed(0))
    assert res.eigenvalues.shape == (3,) and res.eigenvectors.shape == (30, 3)
    # two Krylov steps are too few: whatever the power iteration adds, the verdict follows the true residuals
    true = (a @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0) / res.eigenvalues.abs()
    torch.testing.assert_close(res.residuals, true, rtol=1e-6, atol=1e-12)
    assert res.converged == bool((true <= 1e-5).all())


# --- the operator protocol, the public dense / lambda operators and the Lanczos result ------------------


def test_dense_and_lambda_operators_follow_the_protocol_and_hessian_operators_too(digits_problem):
    from labkit.hessian import GGNOperator, LambdaOperator, Operator

    model, x, y, hess, _ = digits_problem
    dense = DenseOperator(hess)
    lam = LambdaOperator(lambda v: hess @ v, hess.shape[0])
    curvature = [HessianOperator(model, F.cross_entropy, (x, y)), GGNOperator(model, F.cross_entropy, (x, y))]
    for op in (dense, lam, *curvature):
        assert isinstance(op, Operator)
        assert op.shape == (op.numel, op.numel) == tuple(hess.shape)
    assert dense.dtype == lam.dtype == torch.float64 and dense.device == lam.device == torch.device("cpu")
    v = torch.randn(hess.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(dense.matvec(v), hess @ v, rtol=0, atol=0)
    torch.testing.assert_close(lam @ v, hess @ v, rtol=0, atol=0)
    assert lam.matvecs == 1 and not isinstance(hess, Operator)
    with pytest.raises(ValueError, match="length"):
        dense.matvec(v[:-1])
    with pytest.raises(ValueError, match="square"):
        DenseOperator(hess[:3])
    with pytest.raises(TypeError, match="fn must be callable"):
        LambdaOperator("A", 3)
    with pytest.raises(ValueError, match="numel"):
        LambdaOperator(lambda v: v, 0)


def test_lanczos_on_a_dense_operator_matches_eigvalsh():
    from labkit.hessian import LanczosResult

    spectrum = torch.cat([torch.tensor([6.0, -4.0, 3.0]), torch.linspace(-1, 1, 37)])
    a = _spectrum_matrix(21, spectrum)
    v0 = torch.randn(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    run = lanczos(DenseOperator(a), v0, 40)
    assert isinstance(run, LanczosResult) and run.invariant and run.last_beta == 0.0 and run.steps == 40
    ritz, _ = run.ritz()
    torch.testing.assert_close(ritz, torch.linalg.eigvalsh(a), rtol=0, atol=1e-10)
    # a short run: the extreme Ritz values are already close, and the relation H Q = Q (T + E) + r e_m^T holds
    short = lanczos(DenseOperator(a), v0, 25)
    assert not short.invariant and short.last_beta == short.beta > 0
    q = short.basis
    lhs = a @ q
    rhs = q @ (short.tridiagonal() + short.reorthogonalization())
    rhs[:, -1] += short.residual
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-10)
    assert abs(float(short.ritz()[0].max()) - 6.0) < 1e-6
    # frozen, and unpacks / indexes as the 4-tuple of the earlier releases
    alphas, betas, basis, last = short
    assert alphas is short.alphas and basis is short.basis and last == short.last_beta and short[1] is betas
    with pytest.raises(AttributeError):
        short.alphas = None
    with pytest.raises(ValueError, match="v0"):
        lanczos(DenseOperator(a), v0[:5], 3)


def test_top_eigenvalues_and_trace_on_a_lambda_operator_float32():
    from labkit.hessian import LambdaOperator

    a = _spectrum_matrix(22, torch.cat([torch.tensor([8.0, 5.0]), torch.linspace(0, 1, 48)]))
    a32 = a.float()
    op = LambdaOperator(lambda v: a32 @ v, 50, dtype=torch.float32)
    res = top_eigenvalues(op, k=2, generator=torch.Generator().manual_seed(0))
    assert res.eigenvalues.dtype == torch.float32 and res.matvecs == op.matvecs
    torch.testing.assert_close(res.eigenvalues, torch.tensor([8.0, 5.0]), rtol=1e-5, atol=0)
    tr = hutchinson_trace(op, samples=60, method="hutch++", generator=torch.Generator().manual_seed(0))
    assert abs(tr.estimate - float(a.trace())) < 3 * tr.stderr + 1e-4


def test_results_are_frozen(digits_problem):
    *_, hess, _ = digits_problem
    op = DenseOperator(hess[:30, :30])
    for res, field in (
        (top_eigenvalues(op, k=1, generator=torch.Generator().manual_seed(0)), "eigenvalues"),
        (hutchinson_trace(op, samples=4, generator=torch.Generator().manual_seed(0)), "estimate"),
        (spectral_density(op, vectors=1, steps=5, generator=torch.Generator().manual_seed(0)), "sigma"),
    ):
        with pytest.raises(AttributeError):
            setattr(res, field, None)


def test_an_object_with_only_numel_and_matvec_still_works_with_a_deprecation_warning():
    a = _spectrum_matrix(23, torch.linspace(1, 3, 12))

    class Legacy:  # the duck type the algorithms took before the protocol: no shape, dtype, device
        numel = 12

        def matvec(self, v):
            return a @ v

    with pytest.warns(DeprecationWarning, match="LambdaOperator"):
        res = top_eigenvalues(Legacy(), k=1, generator=torch.Generator().manual_seed(0))
    ref = top_eigenvalues(DenseOperator(a), k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.eigenvalues, ref.eigenvalues)
    with pytest.raises(TypeError, match="op must be"):
        hutchinson_trace(object())
