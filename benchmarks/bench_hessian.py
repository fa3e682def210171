"""Benchmark: labkit.hessian vs PyHessian on a digits MLP, with accuracy against the exact spectrum.

Digits MLP 64-32-10 (P = 2410) on all 1797 digits, one thread, CPU time (``time.process_time``, best of
``--repeats``), one process. Each method's time includes building its operator. Writes a markdown table to
``benchmarks/results/hessian.md``. PyHessian (PyPI ``pyhessian==0.1``) is optional: its rows are skipped
when it is not installed. hessian-eigenthings is not on PyPI and is not benchmarked.

Usage: ``python benchmarks/bench_hessian.py [--repeats 3] [--out benchmarks/results/hessian.md]``
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labkit.data import digits
from labkit.hessian import (
    HessianOperator,
    exact_hessian,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)
from labkit.models import mlp


def cpu_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best CPU time over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def clear_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
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

    t_exact, hess = cpu_time(lambda: exact_hessian(model, F.cross_entropy, data), 1)
    exact = torch.linalg.eigvalsh(hess).flip(0)
    true_trace = float(hess.trace())
    numel = hess.shape[0]
    print(f"P = {numel}; exact Hessian in {t_exact:.1f} s CPU; top-3 {exact[:3].tolist()}; trace {true_trace:.4f}")

    rows: list[tuple[str, str, float, str]] = []  # task, library, seconds, accuracy

    def rel(a: float, b: float) -> float:
        return (a - b) / abs(b)

    # cost of one product, relative to a gradient
    params = list(model.parameters())

    def gradient() -> None:
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    t_grad, _ = cpu_time(gradient, 5 * args.repeats)
    v = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    product_cost = {}
    for backend in ("double_backward", "double_backward_fresh", "func"):
        op = HessianOperator(model, F.cross_entropy, data, backend=backend)
        op @ v  # warm-up
        t_hvp, _ = cpu_time(lambda op=op: op @ v, 5 * args.repeats)
        product_cost[backend] = t_hvp
        rows.append(("one Hessian-vector product", f"labkit ({backend})", t_hvp, f"{t_hvp / t_grad:.2f}x a gradient"))

    # labkit
    def lk_top(k: int, tol: float) -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return top_eigenvalues(op, k=k, tol=tol, generator=torch.Generator().manual_seed(0))

    for k in (1, 3):
        for tol, label in ((1e-5, "defaults, tol=1e-5"), (1e-2, "tol=1e-2")):
            t, res = cpu_time(lambda k=k, tol=tol: lk_top(k, tol), args.repeats)
            errs = [rel(float(a), float(b)) for a, b in zip(res.eigenvalues, exact[:k], strict=True)]
            rows.append((f"top-{k} eigenvalue{'s' if k > 1 else ''}", f"labkit (Lanczos, {label})", t,
                         "rel. error " + ", ".join(f"{e:+.1e}" for e in errs) + f" ({res.matvecs} products)"))

    def lk_trace() -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return hutchinson_trace(op, samples=100, generator=torch.Generator().manual_seed(0))

    t, tr = cpu_time(lk_trace, args.repeats)
    rows.append(("trace, 100 probes", "labkit (Hutchinson)", t,
                 f"rel. error {rel(tr.estimate, true_trace):+.2%} (± {tr.stderr / true_trace:.1%} s.e.)"))

    def lk_trace_pp() -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return hutchinson_trace(op, samples=100, method="hutch++", generator=torch.Generator().manual_seed(0))

    t, tr = cpu_time(lk_trace_pp, args.repeats)
    rows.append(("trace, 100 probes", "labkit (Hutch++)", t,
                 f"rel. error {rel(tr.estimate, true_trace):+.2%} (± {tr.stderr / true_trace:.1%} s.e.)"))

    def lk_density() -> Any:
        op = HessianOperator(model, F.cross_entropy, data)
        return spectral_density(op, vectors=1, steps=100, generator=torch.Generator().manual_seed(0))

    t, dens = cpu_time(lk_density, args.repeats)
    top_ritz = rel(float(dens.nodes.max()), float(exact[0]))
    rows.append(("density, 1 probe x 100 Lanczos steps", "labkit (SLQ)", t,
                 f"integral {dens.integral():.4f}; top Ritz value rel. error {top_ritz:+.1e}"))

    # PyHessian
    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        PyHessian = None
        print("pyhessian is not installed: skipping its rows (pip install pyhessian==0.1)")
    if PyHessian is not None:
        def ph_build() -> Any:
            clear_grads(model)  # PyHessian accumulates into .grad: a second build would double the Hessian
            return PyHessian(model, F.cross_entropy, data=data, cuda=False)

        for k in (1, 3):
            def ph_top(k: int = k) -> Any:
                torch.manual_seed(0)
                return ph_build().eigenvalues(top_n=k)[0]

            t, vals = cpu_time(ph_top, args.repeats)
            errs = [rel(float(a), float(b)) for a, b in zip(vals, exact[:k], strict=True)]
            rows.append((f"top-{k} eigenvalue{'s' if k > 1 else ''}", "PyHessian (power iteration, defaults)", t,
                         "rel. error " + ", ".join(f"{e:+.1e}" for e in errs)))

        def ph_trace() -> Any:
            torch.manual_seed(0)
            return ph_build().trace(maxIter=100, tol=0.0)

        t, vals = cpu_time(ph_trace, args.repeats)
        est = sum(vals) / len(vals)
        rows.append(("trace, 100 probes", "PyHessian (Hutchinson)", t,
                     f"rel. error {rel(est, true_trace):+.2%} ({len(vals)} probes)"))

        def ph_density() -> Any:
            torch.manual_seed(0)
            return ph_build().density(iter=100, n_v=1)

        try:
            t, (eigs, weights) = cpu_time(ph_density, args.repeats)
            rows.append(("density, 1 probe x 100 Lanczos steps", "PyHessian (SLQ)", t,
                         f"weights sum {sum(weights[0]):.4f}; top Ritz value rel. error "
                         f"{rel(max(eigs[0]), float(exact[0])):+.1e}"))
        except Exception as exc:  # noqa: BLE001 - report the failure in the table
            rows.append(("density, 1 probe x 100 Lanczos steps", "PyHessian (SLQ)", float("nan"),
                         f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"))
        clear_grads(model)

    # ratios labkit / PyHessian
    lines = [
        "# labkit.hessian vs PyHessian",
        "",
        f"Digits MLP 64-32-10 (P = {numel}) on all {len(x)} digits, cross-entropy, float32, one thread, CPU time "
        f"(best of {args.repeats}), including operator construction. torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. "
        f"Exact spectrum from `exact_hessian` (float64, {t_exact:.1f} s): "
        f"top-3 = {', '.join(f'{v:.5f}' for v in exact[:3].tolist())}, trace = {true_trace:.4f}. "
        f"One gradient: {t_grad * 1e3:.2f} ms.",
        "",
        "| task | library | CPU time (s) | accuracy vs exact |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {task} | {lib} | {sec:.4f} | {acc} |" for task, lib, sec, acc in rows]
    by_task: dict[str, dict[str, float]] = {}
    for task, lib, sec, _ in rows:
        by_task.setdefault(task, {})[lib] = sec
    ratio_lines = []
    for task, libs in by_task.items():
        lk = [s for lib, s in libs.items() if lib.startswith("labkit")]
        ph = [s for lib, s in libs.items() if lib.startswith("PyHessian")]
        if lk and ph and ph[0] == ph[0]:
            ratio_lines.append(f"| {task} | {min(lk) / ph[0]:.2f} |")
    if ratio_lines:
        lines += ["", "| task | labkit time / PyHessian time (fastest labkit variant) |", "|---|---:|", *ratio_lines]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
