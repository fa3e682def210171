"""HessianOperator / GGNOperator / exact_hessian vs closed forms and torch.autograd.functional.hessian."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.hessian import BACKENDS, GGNOperator, HessianOperator, exact_hessian, flatten, unflatten

torch.set_num_threads(1)


def small_mlp(seed=0, d_in=5, hidden=4, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, out)).double()


def data(seed=0, n=17, d_in=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randint(
        0, classes, (n,), generator=g
    )


def autograd_hessian(model, loss_fn, x, y):
    params = [p.detach().clone() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def f(flat):
        ps = unflatten(flat, params)
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,))
        return loss_fn(out, y)

    return torch.autograd.functional.hessian(f, flatten(params))


@pytest.mark.parametrize("backend", BACKENDS)
def test_operator_matches_autograd_hessian_every_backend(backend):
    model = small_mlp()
    x, y = data()
    reference = autograd_hessian(model, F.cross_entropy, x, y)
    op = HessianOperator(model, F.cross_entropy, (x, y), backend=backend)
    assert op.numel == reference.shape[0]
    dense = op.to_dense()
    torch.testing.assert_close(dense, reference, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(
        exact_hessian(model, F.cross_entropy, (x, y)), reference, rtol=1e-9, atol=1e-11
    )


def test_linear_regression_closed_form():
    torch.manual_seed(1)
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    model = nn.Linear(4, 1).double()
    xb = torch.cat([x, torch.ones(30, 1, dtype=torch.float64)], dim=1)  # params order: weight, bias
    closed = 2 * xb.T @ xb / 30  # Hessian of mean squared error
    for backend in BACKENDS:
        dense = HessianOperator(model, F.mse_loss, (x, y), backend=backend).to_dense()
        torch.testing.assert_close(dense, closed, rtol=1e-10, atol=1e-12)
    # linear model + squared error: the GGN is the Hessian
    torch.testing.assert_close(
        GGNOperator(model, F.mse_loss, (x, y)).to_dense(), closed, rtol=1e-10, atol=1e-12
    )


def test_logistic_regression_closed_form():
    torch.manual_seed(2)
    x = torch.randn(40, 3, dtype=torch.float64)
    y = (torch.rand(40) > 0.5).double()
    model = nn.Linear(3, 1, bias=False).double()
    p = torch.sigmoid(x @ model.weight.detach().T).squeeze(1)
    closed = (x.T * (p * (1 - p))) @ x / 40

    def loss_fn(out, t):
        return F.binary_cross_entropy_with_logits(out.squeeze(1), t)

    torch.testing.assert_close(
        HessianOperator(model, loss_fn, (x, y)).to_dense(), closed, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(exact_hessian(model, loss_fn, (x, y)), closed, rtol=1e-10, atol=1e-12)


def test_ggn_is_psd_and_equals_jt_h_j():
    model = small_mlp(3)
    x, y = data(3)
    ggn = GGNOperator(model, F.cross_entropy, (x, y)).to_dense()
    # reference: J^T H_L J summed over examples, J from torch.func.jacrev
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]

    def out_of(flat):
        return torch.func.functional_call(model, dict(zip(names, unflatten(flat, params), strict=True)), (x,))

    jac = torch.autograd.functional.jacobian(out_of, flatten(params))  # (n, C, P)
    probs = torch.softmax(out_of(flatten(params)), dim=1)
    h_l = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    ref = torch.einsum("ncp,ncd,ndq->pq", jac, h_l, jac) / len(x)
    torch.testing.assert_close(ggn, ref, rtol=1e-9, atol=1e-11)
    assert torch.linalg.eigvalsh(ggn).min() > -1e-10


@pytest.mark.parametrize("backend", BACKENDS)
def test_uneven_batches_weighted_by_size(backend):
    model = small_mlp(4)
    x, y = data(4, n=23)
    full = HessianOperator(model, F.cross_entropy, (x, y), backend=backend)
    batches = [(x[:10], y[:10]), (x[10:20], y[10:20]), (x[20:], y[20:])]  # last batch of 3
    split = HessianOperator(model, F.cross_entropy, batches, backend=backend)
    v = torch.randn(full.numel, dtype=torch.float64)
    torch.testing.assert_close(split @ v, full @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        exact_hessian(model, F.cross_entropy, batches),
        exact_hessian(model, F.cross_entropy, (x, y)),
        rtol=1e-10,
        atol=1e-12,
    )
    torch.testing.assert_close(
        GGNOperator(model, F.cross_entropy, batches) @ v,
        GGNOperator(model, F.cross_entropy, (x, y)) @ v,
        rtol=1e-10,
        atol=1e-12,
    )


def test_params_subset_is_a_block_of_the_full_hessian():
    model = small_mlp(5)
    x, y = data(5)
    full = exact_hessian(model, F.cross_entropy, (x, y))
    last = list(model[2].parameters())
    n_first = sum(p.numel() for p in model[0].parameters())
    block = HessianOperator(model, F.cross_entropy, (x, y), params=last).to_dense()
    torch.testing.assert_close(block, full[n_first:, n_first:], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grads_params_and_modes_untouched_and_same_numbers_twice(backend):
    model = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)
    ).double()
    model.train()
    x, y = data(6)
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel, strict=True):
        p.grad = s.clone()
    before = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    first = HessianOperator(model, F.cross_entropy, (x, y), backend=backend) @ v
    second = HessianOperator(model, F.cross_entropy, (x, y), backend=backend) @ v
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    exact_hessian(model, F.cross_entropy, (x, y))
    GGNOperator(model, F.cross_entropy, (x, y)) @ v
    assert model.training and all(m.training for m in model.modules())
    for p, s, b in zip(model.parameters(), sentinel, before, strict=True):
        assert torch.equal(p.grad, s) and torch.equal(p.detach(), b)
    for b, c in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(b, c)


def test_float32_operator_accepts_float64_vectors_and_returns_their_dtype():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(9, 4), torch.randint(0, 2, (9,))
    op = HessianOperator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.numel, dtype=torch.float64)
    out = op @ v
    assert out.dtype == torch.float64
    ref = exact_hessian(model, F.cross_entropy, (x, y)) @ v
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (op @ torch.stack([v, 2 * v], dim=1)).shape == (op.numel, 2)


def test_gradient_and_loss_helpers():
    model = small_mlp(7)
    x, y = data(7)
    op = HessianOperator(model, F.cross_entropy, [(x[:5], y[:5]), (x[5:], y[5:])])
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(op.gradient(), flatten(grads))
    assert abs(op.loss() - loss.item()) < 1e-12
    assert all(p.grad is None for p in model.parameters())


def test_clear_errors():
    model = small_mlp()
    x, y = data()
    op = HessianOperator(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match="length"):
        op @ torch.zeros(op.numel + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, F.cross_entropy, [])
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, F.cross_entropy, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), (x, y))
    with pytest.raises(ValueError, match="backend"):
        HessianOperator(model, F.cross_entropy, (x, y), backend="magic")
    with pytest.raises(TypeError, match="data"):
        HessianOperator(model, F.cross_entropy, x)
    with pytest.raises(ValueError, match="rows"):
        HessianOperator(model, F.cross_entropy, (x, y[:3]))
    with pytest.raises(ValueError, match="not a parameter"):
        HessianOperator(model, F.cross_entropy, (x, y), params=[nn.Parameter(torch.zeros(2))])
    with pytest.raises(TypeError, match="model"):
        HessianOperator("model", F.cross_entropy, (x, y))


def test_hvp_of_a_quadratic_is_the_matrix_times_v_float32_and_float64():
    # a linear model on the identity outputs its weights w; loss(w) = 0.5 w^T A w + b^T w: H = A exactly
    g = torch.Generator().manual_seed(8)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        m = torch.randn(6, 6, generator=g, dtype=torch.float64)
        a = (m @ m.T).to(dtype)
        b = torch.randn(6, generator=g, dtype=torch.float64).to(dtype)
        model = nn.Linear(6, 1, bias=False).to(dtype)

        def loss_fn(out, t, a=a, b=b):
            w = out.reshape(-1)
            return 0.5 * w @ a @ w + b @ w

        x, y = torch.eye(6, dtype=dtype), torch.zeros(6, dtype=dtype)
        for backend in BACKENDS:
            op = HessianOperator(model, loss_fn, (x, y), backend=backend)
            v = torch.randn(6, generator=g, dtype=torch.float64)
            torch.testing.assert_close(op @ v, a.double() @ v, rtol=tol, atol=tol)
            torch.testing.assert_close(op.to_dense(), a, rtol=tol, atol=tol)


def test_cached_products_match_the_public_autograd_route_exactly():
    # the cached product calls the autograd engine directly; torch.autograd.grad must give the same bits
    model = small_mlp(9)
    x, y = data(9, n=31)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.Generator().manual_seed(9)
    for _ in range(3):
        v = torch.randn(op.numel, generator=g, dtype=torch.float64)
        ref = flatten(torch.autograd.grad(grads, params, unflatten(v, params), retain_graph=True))
        torch.testing.assert_close(op @ v, ref, rtol=0, atol=0)
    # repeated products on one operator reuse the graph and give the same numbers every time
    v = torch.randn(op.numel, generator=g, dtype=torch.float64)
    first = op @ v
    for _ in range(3):
        torch.testing.assert_close(op @ v, first, rtol=0, atol=0)
    assert op.matvecs == 7
    # the non-contiguous slices of a matrix are products too
    mat = torch.randn(op.numel, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op @ mat[:, 1], op @ mat[:, 1].contiguous(), rtol=0, atol=0)


def test_cached_and_fresh_backends_agree_over_batches_and_subsets():
    model = small_mlp(10)
    x, y = data(10, n=29)
    batches = [(x[:12], y[:12]), (x[12:], y[12:])]
    g = torch.Generator().manual_seed(10)
    for params in (None, list(model[0].parameters()), [model[2].bias]):
        cached = HessianOperator(model, F.cross_entropy, batches, params=params)
        fresh = HessianOperator(model, F.cross_entropy, batches, params=params, backend="double_backward_fresh")
        v = torch.randn(cached.numel, generator=g, dtype=torch.float64)
        torch.testing.assert_close(cached @ v, fresh @ v, rtol=1e-12, atol=1e-14)


def test_unused_and_linear_parameters_give_zero_rows():
    torch.manual_seed(11)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)

    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)
            self.spare = nn.Parameter(torch.ones(2))  # never used by forward

        def forward(self, inp):
            return self.lin(inp)

    model = WithSpare().double()
    dense = HessianOperator(model, F.mse_loss, (x, y)).to_dense()
    assert dense.shape == (6, 6) and torch.equal(dense[:2], torch.zeros(2, 6, dtype=torch.float64))  # own params first
    torch.testing.assert_close(dense, HessianOperator(model, F.mse_loss, (x, y), backend="func").to_dense())

    # a loss linear in the parameters: the Hessian is zero
    lin = nn.Linear(3, 1).double()
    op = HessianOperator(lin, lambda out, t: out.mean(), (x, y))
    assert torch.equal(op @ torch.ones(op.numel, dtype=torch.float64), torch.zeros(op.numel, dtype=torch.float64))


def test_fast_path_switch_gives_the_same_bits_and_old_names_stay_importable():
    from labkit import autograd
    from labkit.hessian import _fastpath
    from labkit.hessian.operator import as_batches, model_mode, resolve_params, vjp

    assert as_batches is autograd.as_batches and resolve_params is autograd.resolve_params
    assert model_mode is autograd.train_mode and vjp is _fastpath.vjp
    model = small_mlp(12)
    x, y = data(12, n=19)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.numel, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    fast = op @ v
    with _fastpath.use_fast_path(False):
        assert not _fastpath.ENABLED
        public = op @ v
    assert _fastpath.ENABLED == (_fastpath.os.environ.get("LABKIT_FAST_HVP", "1").strip() != "0")
    torch.testing.assert_close(fast, public, rtol=0, atol=0)


def test_cached_operator_products_do_not_switch_modes_but_fresh_ones_do():
    model = nn.Sequential(nn.Linear(5, 6), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    model.train()
    x, y = data(13)
    cached = HessianOperator(model, F.cross_entropy, (x, y))
    fresh = HessianOperator(model, F.cross_entropy, (x, y), backend="double_backward_fresh")
    assert not cached.runs_model and fresh.runs_model and GGNOperator(model, F.cross_entropy, (x, y)).runs_model
    v = torch.randn(cached.numel, dtype=torch.float64)
    # eval mode during the fresh products (dropout off): the same numbers as the cached graph built in eval mode
    torch.testing.assert_close(cached @ v, fresh @ v, rtol=1e-12, atol=1e-14)
    assert model.training and model[1].training
