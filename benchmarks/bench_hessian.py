"""Benchmark: labkit.hessian vs PyHessian and hessian-eigenthings on a digits MLP, with accuracy vs the exact spectrum.

Digits MLP 64-32-10 (P = 2410) on all 1797 digits, one thread, CPU time (``time.process_time``), one process.
Every method is a thunk that builds its own operator (construction is part of its time); the thunks run
interleaved, round after round, and each keeps its best time over ``--repeats`` rounds, so a load change on the
machine hits every library alike. Writes a markdown table to ``benchmarks/results/hessian.md``.

Peers (``benchmarks/requirements.txt``, installed with ``--no-deps`` so torch stays pinned) are optional: a peer
that does not import gets one row saying why, and a method of a peer that raises gets a row with its error.

- PyHessian (``pyhessian==0.1``, Yao et al. 2020): power iteration, Hutchinson, SLQ, with its defaults.
- hessian-eigenthings (``hessian-eigenthings``, Golmant et al.): Lanczos and deflated power iteration with
  its defaults, Hutchinson / Hutch++, SLQ. Its operator redoes the forward and double backward pass for every
  product (no cached gradient graph).

labkit runs with its defaults and, for the top eigenvalues, at looser tolerances: ``tol=1e-3`` is PyHessian's
nominal tolerance (PyHessian's is on the change of the eigenvalue, labkit's on the true relative residual), and
``max_iter=2k`` is the Krylov budget of hessian-eigenthings' Lanczos defaults (after so few steps the error
depends mostly on the random start vector). The ratio table compares each peer row with labkit's defaults (or
the same method and budget) and with the fastest labkit row whose error is at most the peer's.

The cached Hessian-vector product may call torch's autograd engine directly (``labkit/hessian/_fastpath.py``,
skipping ``torch.autograd.grad``'s Python-side checks): the product and the default top-k Lanczos are also timed
with that fast path switched off (rows marked "public torch.autograd.grad"), side by side. The ratio table keeps
comparing the default (fast path on) rows.

Usage: ``python benchmarks/bench_hessian.py [--repeats 5] [--out benchmarks/results/hessian.md]``
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labkit.data import digits
from labkit.hessian import (
    HessianOperator,
    exact_hessian,
    flatten,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
    unflatten,
)
from labkit.hessian._fastpath import AVAILABLE as FAST_AVAILABLE
from labkit.hessian._fastpath import use_fast_path
from labkit.models import mlp

HVP = "one Hessian-vector product"
TRACE = "trace, 100 products"
DENSITY = "density, 1 probe x 100 Lanczos steps"
PUBLIC = "public torch.autograd.grad (LABKIT_FAST_HVP=0)"
FLOAT32_FLOOR = 1e-6  # errors below this are the float32 rounding of the operators: they count as equal


def top(k: int) -> str:
    return f"top-{k} eigenvalue{'s' if k > 1 else ''}"


def same_budget(k: int) -> str:
    return f"Lanczos, max_iter={2 * k} (hessian-eigenthings' default budget)"


@dataclass
class Row:
    task: str
    library: str  # "labkit", "PyHessian", "hessian-eigenthings"
    variant: str
    seconds: float = math.nan
    accuracy: str = ""
    error: float = math.nan  # largest |relative error| against the exact value(s), for the ratio table
    vs: str = ""  # the labkit variant this peer row is compared with head to head (same method or defaults)
    fn: Callable[[], Any] | None = None
    report: Callable[[Any], tuple[str, float]] | None = None


def clear_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def rel(a: float, b: float) -> float:
    return (a - b) / abs(b)


def eig_report(exact: torch.Tensor, k: int, values: Any, extra: str = "") -> tuple[str, float]:
    errs = [rel(float(a), float(b)) for a, b in zip(list(values)[:k], exact[:k], strict=True)]
    text = "rel. error " + ", ".join(f"{e:+.1e}" for e in errs) + (f" ({extra})" if extra else "")
    return text, max(abs(e) for e in errs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hessian.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    split = digits(seed=0)
    x = torch.cat([split.train_x, split.test_x])
    y = torch.cat([split.train_y, split.test_y])
    model = mlp(64, [32], 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    clear_grads(model)
    data = (x, y)
    params = list(model.parameters())

    start = time.process_time()
    hess = exact_hessian(model, F.cross_entropy, data)
    t_exact = time.process_time() - start
    exact = torch.linalg.eigvalsh(hess).flip(0)
    true_trace = float(hess.trace())
    numel = hess.shape[0]
    print(f"P = {numel}; exact Hessian in {t_exact:.1f} s CPU; top-3 {exact[:3].tolist()}; trace {true_trace:.4f}")

    v = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    hv_exact = hess @ v.double()

    def hvp_report(out: torch.Tensor) -> tuple[str, float]:
        err = float((out.double() - hv_exact).norm() / hv_exact.norm())
        return f"rel. error {err:.1e}", err

    def trace_report(estimate: float, extra: str) -> tuple[str, float]:
        err = rel(estimate, true_trace)
        return f"rel. error {err:+.2%} ({extra})", abs(err)

    def density_report(top_ritz: float, extra: str) -> tuple[str, float]:
        err = rel(top_ritz, float(exact[0]))
        return f"{extra}; top Ritz value rel. error {err:+.1e}", abs(err)

    rows: list[Row] = []

    # a gradient, the unit of the product cost
    def gradient() -> None:
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    # ---- labkit
    cached: HessianOperator | None = None
    for backend in ("double_backward", "double_backward_fresh", "func"):
        op = HessianOperator(model, F.cross_entropy, data, backend=backend)
        cached = op if backend == "double_backward" else cached
        op @ v  # warm-up
        rows.append(Row(HVP, "labkit", backend, fn=lambda op=op: op @ v, report=hvp_report))
        if backend == "double_backward" and FAST_AVAILABLE:
            # the same product through the public torch.autograd.grad (the private fast path switched off)
            def public_hvp(op: HessianOperator = op) -> torch.Tensor:
                with use_fast_path(False):
                    return op @ v

            rows.append(Row(HVP, "labkit", f"{backend}, {PUBLIC}", fn=public_hvp, report=hvp_report))

    def lk_top(k: int, **kw: Any) -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return top_eigenvalues(op, k=k, generator=torch.Generator().manual_seed(0), **kw)

    for k in (1, 3):
        variants: list[tuple[dict[str, Any], str]] = [
            ({}, "Lanczos, defaults (tol=1e-5)"),
            ({"tol": 1e-3}, "Lanczos, tol=1e-3"),
            ({"tol": 1e-2}, "Lanczos, tol=1e-2"),
            ({"max_iter": 2 * k}, same_budget(k)),
        ]
        for kw, label in variants:
            rows.append(Row(top(k), "labkit", label, fn=lambda k=k, kw=kw: lk_top(k, **kw),
                            report=lambda r, k=k: eig_report(
                                exact, k, r.eigenvalues, f"{r.matvecs} products, converged={r.converged}")))
        if FAST_AVAILABLE:
            def public_top(k: int = k) -> Any:
                with use_fast_path(False):
                    return lk_top(k)

            rows.append(Row(top(k), "labkit", f"Lanczos, defaults (tol=1e-5), {PUBLIC}", fn=public_top,
                            report=lambda r, k=k: eig_report(
                                exact, k, r.eigenvalues, f"{r.matvecs} products, converged={r.converged}")))

    for method, label in (("hutchinson", "Hutchinson"), ("hutch++", "Hutch++")):
        def lk_trace(method: str = method) -> Any:
            op = HessianOperator(model, F.cross_entropy, data)
            return hutchinson_trace(op, samples=100, method=method, generator=torch.Generator().manual_seed(0))

        rows.append(Row(TRACE, "labkit", label, fn=lk_trace,
                        report=lambda r: trace_report(r.estimate, f"± {r.stderr / true_trace:.1%} s.e.")))

    def lk_density() -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return spectral_density(op, vectors=1, steps=100, generator=torch.Generator().manual_seed(0))

    rows.append(Row(DENSITY, "labkit", "SLQ", fn=lk_density,
                    report=lambda d: density_report(float(d.nodes.max()), f"integral {d.integral():.4f}")))

    # ---- PyHessian
    try:
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product as ph_hvp
    except ImportError as exc:
        rows.append(Row("all", "PyHessian", "absent", accuracy=f"not benchmarked: {exc} "
                        "(pip install --no-deps -r benchmarks/requirements.txt)"))
        PyHessian = None
    if PyHessian is not None:
        def ph_build() -> Any:
            clear_grads(model)  # PyHessian accumulates into .grad: a second build would double the Hessian
            return PyHessian(model, F.cross_entropy, data=data, cuda=False)

        ph_op = ph_build()
        v_list = unflatten(v, ph_op.params)
        rows.append(Row(HVP, "PyHessian", "cached gradient graph", vs="double_backward",
                        fn=lambda: ph_hvp(ph_op.gradsH, ph_op.params, v_list),
                        report=lambda out: hvp_report(flatten(out))))

        for k in (1, 3):
            def ph_top(k: int = k) -> Any:
                torch.manual_seed(0)
                return ph_build().eigenvalues(top_n=k)[0]

            rows.append(Row(top(k), "PyHessian", "power iteration, defaults (maxIter=100, tol=1e-3)",
                            vs="Lanczos, defaults (tol=1e-5)", fn=ph_top,
                            report=lambda vals, k=k: eig_report(exact, k, vals)))

        def ph_trace() -> Any:
            torch.manual_seed(0)
            return ph_build().trace(maxIter=100, tol=0.0)

        rows.append(Row(TRACE, "PyHessian", "Hutchinson", vs="Hutchinson", fn=ph_trace,
                        report=lambda vals: trace_report(sum(vals) / len(vals), f"{len(vals)} probes")))

        def ph_density() -> Any:
            torch.manual_seed(0)
            return ph_build().density(iter=100, n_v=1)

        rows.append(Row(DENSITY, "PyHessian", "SLQ", vs="SLQ", fn=ph_density,
                        report=lambda r: density_report(max(r[0][0]), f"weights sum {sum(r[1][0]):.4f}")))

    # ---- hessian-eigenthings
    try:
        import hessian_eigenthings as he
    except ImportError as exc:
        rows.append(Row("all", "hessian-eigenthings", "absent", accuracy=f"not benchmarked: {exc} "
                        "(pip install --no-deps -r benchmarks/requirements.txt)"))
        he = None
    if he is not None:
        def he_build() -> Any:
            return he.HessianOperator(model, [data], he.supervised_loss(F.cross_entropy))

        he_op = he_build()
        rows.append(Row(HVP, "hessian-eigenthings", "autograd (forward + double backward)", vs="double_backward",
                        fn=lambda: he_op.matvec(v), report=hvp_report))

        def he_report(k: int) -> Callable[[Any], tuple[str, float]]:
            def report(r: Any) -> tuple[str, float]:
                conv = sum(bool(c) for c in r.converged)
                return eig_report(exact, k, r.eigenvalues, f"{r.iterations} iterations, {conv}/{k} converged")
            return report

        for k in (1, 3):
            rows.append(Row(top(k), "hessian-eigenthings", "Lanczos, defaults (max_iter=2k)", vs=same_budget(k),
                            fn=lambda k=k: he.lanczos(he_build(), k=k, seed=0), report=he_report(k)))
            rows.append(Row(top(k), "hessian-eigenthings", "power iteration, defaults (max_iter=100, tol=1e-4)",
                            vs="Lanczos, defaults (tol=1e-5)",
                            fn=lambda k=k: he.deflated_power_iteration(he_build(), k=k, seed=0),
                            report=he_report(k)))

        for method, label in (("hutchinson", "Hutchinson"), ("hutch++", "Hutch++")):
            rows.append(Row(TRACE, "hessian-eigenthings", label, vs=label,
                            fn=lambda method=method: he.trace(he_build(), num_matvecs=100, method=method, seed=0),
                            report=lambda r: trace_report(r.estimate, f"± {r.stderr / true_trace:.1%} s.e.")))

        rows.append(Row(DENSITY, "hessian-eigenthings", "SLQ", vs="SLQ",
                        fn=lambda: he.spectral_density(he_build(), num_runs=1, lanczos_steps=100, seed=0),
                        report=lambda d: density_report(
                            float(d.raw_eigenvalues.nan_to_num(-math.inf).max()),
                            f"integral {float(torch.trapezoid(d.density, d.grid)):.4f}")))

    # ---- run everything interleaved, best CPU time of each over the rounds
    timed = [r for r in rows if r.fn is not None]
    results: dict[int, Any] = {}
    failures: dict[int, str] = {}
    best_grad = math.inf
    for row in timed:
        row.seconds = math.inf
    for _ in range(args.repeats):
        for _ in range(5):
            start = time.process_time()
            gradient()
            best_grad = min(best_grad, time.process_time() - start)
        for i, row in enumerate(timed):
            if i in failures:
                continue
            products = 5 if row.task == HVP else 1  # a product is short: time the best of a few
            for _ in range(products):
                start = time.process_time()
                try:
                    results[i] = row.fn()  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - a peer's failure is reported in the table
                    failures[i] = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    break
                row.seconds = min(row.seconds, time.process_time() - start)
            clear_grads(model)
    # the checks each cached product runs before its backward pass: v (floating, finite) and the staleness check
    # (parameters unchanged since the graph was built), timed over many calls, best of the rounds
    assert cached is not None
    best_checks = math.inf
    for _ in range(args.repeats):
        start = time.process_time()
        for _ in range(1000):
            cached._check_vector(v)
            cached._is_current()
        best_checks = min(best_checks, (time.process_time() - start) / 1000)
    for i, row in enumerate(timed):
        if i in failures:
            row.seconds, row.accuracy = math.nan, failures[i]
            continue
        row.accuracy, row.error = row.report(results[i])  # type: ignore[misc]
        if row.task == HVP:
            row.accuracy = f"{row.seconds / best_grad:.2f}x a gradient; {row.accuracy}"

    # ---- tables
    hvp_seconds = next(r.seconds for r in rows if r.library == "labkit" and r.variant == "double_backward")
    lines = [
        "# labkit.hessian vs PyHessian and hessian-eigenthings",
        "",
        f"Digits MLP 64-32-10 (P = {numel}) on all {len(x)} digits, cross-entropy, float32, one thread, CPU time "
        f"(best of {args.repeats} interleaved rounds), including operator construction. torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. "
        f"Exact spectrum from `exact_hessian` (float64, {t_exact:.1f} s): "
        f"top-3 = {', '.join(f'{val:.5f}' for val in exact[:3].tolist())}, trace = {true_trace:.4f}. "
        f"One gradient: {best_grad * 1e3:.2f} ms. The input and staleness checks of a cached product (v floating "
        f"and finite; parameters unchanged since the graph was built, else it is rebuilt): "
        f"{best_checks * 1e6:.1f} µs, {best_checks / hvp_seconds:.1%} of a product.",
        "",
        "| task | library | method | CPU time (s) | accuracy vs exact |",
        "|---|---|---|---:|---|",
    ]
    lines += [f"| {r.task} | {r.library} | {r.variant} | {r.seconds:.4f} | {r.accuracy} |" for r in rows]

    ratio_lines = []
    for peer in rows:
        if peer.library == "labkit" or not peer.seconds == peer.seconds:
            continue
        lk = [r for r in rows if r.library == "labkit" and r.task == peer.task and r.seconds == r.seconds
              and PUBLIC not in r.variant]
        same = next((r for r in lk if r.variant == peer.vs), None)
        head = f"{same.seconds / peer.seconds:.2f} ({same.variant}, error {same.error:.1e})" if same else "-"
        good = [r for r in lk if r.error <= max(peer.error, FLOAT32_FLOOR)]
        fast = min(good, key=lambda r: r.seconds) if good else None
        best = f"{fast.seconds / peer.seconds:.2f} ({fast.variant}, error {fast.error:.1e})" if fast else "-"
        name = f"{peer.library}: {peer.variant} (error {peer.error:.1e})"
        ratio_lines.append(f"| {peer.task} | {name} | {head} | {best} |")
    if ratio_lines:
        lines += [
            "",
            "Time ratios labkit / peer (below 1: labkit is faster); errors are the largest |relative error| vs exact,",
            f"and errors below {FLOAT32_FLOOR:.0e} (the float32 rounding of the operators) count as equal.",
            "",
            "| task | peer | labkit defaults, or same method and budget | fastest labkit at equal or better accuracy |",
            "|---|---|---:|---:|",
            *ratio_lines,
        ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
