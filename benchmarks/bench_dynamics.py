"""Benchmark: labkit.dynamics.batch_top_eigenvalue vs PyHessian's top eigenvalue on the same mini-batches.

The problem of ``notebooks/dynamics/01_lr_vs_batch_size`` at a size whose Hessians are exact: 512 examples in
d = 30, a 30-16-1 tanh MLP (P = 513), squared loss, float32, one thread. For each batch size, labkit's
``batch_top_eigenvalue`` draws ``BATCHES`` mini-batches (and does the full batch); PyHessian (``pyhessian==0.1``,
Yao et al. 2020, power iteration) gets the very same mini-batches (``EigenStats.indices``) and the full batch.
Accuracy: the largest relative error of the top eigenvalues against ``exact_hessian`` (float64 eigvalsh) over
those batches. CPU time (``time.process_time``), best of ``--repeats`` interleaved rounds; every method builds its
own operators (PyHessian's construction, with its gradient pass, is part of its time, as labkit's is).

labkit runs at tolerances 1e-2, 1e-3 and its default 1e-4 (the true relative residual of Lanczos); PyHessian
at its defaults (``maxIter=100, tol=1e-3``, the relative change of the eigenvalue) and at ``tol=1e-6, maxIter=1000``.
The ratio table gives, for each PyHessian row, the fastest labkit row whose error is at most PyHessian's.
A peer that does not import gets a "not runnable (reason)" row.

Usage: ``python benchmarks/bench_dynamics.py [--repeats 3] [--out benchmarks/results/dynamics.md]``
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

from labkit.dynamics import batch_top_eigenvalue, regression_mlp, spiked_regression
from labkit.hessian import exact_hessian

BATCH_SIZES = (8, 64)
BATCHES = 4
FLOAT32_FLOOR = 1e-6


@dataclass
class Row:
    batch_size: int
    library: str
    method: str
    fn: Callable[[], list[float]] | None = None
    seconds: float = math.nan
    error: float = math.nan
    note: str = ""


def clear_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "dynamics.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(0)
    x, y = spiked_regression(512, 30, spike=1.0, generator=g)
    model = regression_mlp(30, width=16, generator=g)
    numel = sum(p.numel() for p in model.parameters())

    def exact_top(idx: torch.Tensor | None) -> float:
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        return float(torch.linalg.eigvalsh(exact_hessian(model, F.mse_loss, (xb, yb), dtype=torch.float64))[-1])

    try:
        from pyhessian import hessian as PyHessian
        peer_error = None
    except ImportError as exc:  # pragma: no cover - depends on the environment
        PyHessian, peer_error = None, f"not runnable ({exc}; pip install --no-deps -r benchmarks/requirements.txt)"

    rows: list[Row] = []
    truths: dict[int, list[float]] = {}
    for b in BATCH_SIZES:
        probe = batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=b, batches=BATCHES,
                                     generator=torch.Generator().manual_seed(b))
        batches = [idx for idx in probe.indices] + [None]
        truths[b] = [exact_top(idx) for idx in batches]

        for tol in (1e-2, 1e-3, 1e-4):
            def lk(tol: float = tol, b: int = b) -> list[float]:
                s = batch_top_eigenvalue(model, F.mse_loss, (x, y), batch_size=b, batches=BATCHES,
                                         generator=torch.Generator().manual_seed(b), tol=tol)
                return [*s.values.tolist(), s.full_batch]

            label = f"Lanczos, tol={tol:g}" + (" (default)" if tol == 1e-4 else "")
            rows.append(Row(b, "labkit", label, fn=lk))

        if PyHessian is None:
            rows.append(Row(b, "PyHessian", "-", note=peer_error or ""))
            continue
        for max_iter, tol in ((100, 1e-3), (1000, 1e-6)):
            def ph(max_iter: int = max_iter, tol: float = tol, batches: list[Any] = batches) -> list[float]:
                torch.manual_seed(0)
                out = []
                for idx in batches:
                    clear_grads(model)  # PyHessian accumulates into .grad
                    data = (x, y) if idx is None else (x[idx], y[idx])
                    out.append(float(PyHessian(model, F.mse_loss, data=data, cuda=False)
                                     .eigenvalues(maxIter=max_iter, tol=tol, top_n=1)[0][0]))
                clear_grads(model)
                return out

            label = f"power iteration, maxIter={max_iter}, tol={tol:g}" + (" (defaults)" if tol == 1e-3 else "")
            rows.append(Row(b, "PyHessian", label, fn=ph))

    timed = [r for r in rows if r.fn is not None]
    best = {id(r): math.inf for r in timed}
    results: dict[int, list[float]] = {}
    for _ in range(args.repeats):
        for r in timed:
            start = time.process_time()
            try:
                out = r.fn()  # type: ignore[misc]
            except Exception as exc:  # a peer that raises gets its error as the row
                r.note = f"not runnable ({type(exc).__name__}: {exc})"
                continue
            best[id(r)] = min(best[id(r)], time.process_time() - start)
            results[id(r)] = out
    for r in timed:
        if id(r) in results:
            r.seconds = best[id(r)]
            truth = truths[r.batch_size]
            r.error = max(abs(v - t) / abs(t) for v, t in zip(results[id(r)], truth, strict=True))

    lines = [
        "# labkit.dynamics.batch_top_eigenvalue vs PyHessian",
        "",
        f"512 examples in d = 30, a 30-16-1 tanh MLP (P = {numel}), squared loss, float32, one thread; "
        f"{BATCHES} mini-batches plus the full batch per row (the same batches for both libraries). CPU time, best "
        f"of {args.repeats} interleaved rounds, operator construction included. Error: largest relative error of the "
        f"top eigenvalue against the exact Hessian (float64). torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. Timings were taken on a shared, loaded machine.",
        "",
        "| batch size | library | method | CPU time (s) | max rel. error | note |",
        "|---:|---|---|---:|---:|---|",
    ]
    lines += [f"| {r.batch_size} | {r.library} | {r.method} | {r.seconds:.4f} | {r.error:.1e} | {r.note} |"
              for r in rows]
    ratio = []
    for peer in rows:
        if peer.library == "labkit" or not math.isfinite(peer.seconds):
            continue
        good = [r for r in rows if r.library == "labkit" and r.batch_size == peer.batch_size
                and math.isfinite(r.seconds) and r.error <= max(peer.error, FLOAT32_FLOOR)]
        fast = min(good, key=lambda r: r.seconds) if good else None
        cell = f"{fast.seconds / peer.seconds:.2f} ({fast.method}, error {fast.error:.1e})" if fast else "-"
        ratio.append(f"| {peer.batch_size} | {peer.method} (error {peer.error:.1e}) | {cell} |")
    if ratio:
        lines += ["", "Time ratio labkit / PyHessian at equal or better accuracy (below 1: labkit is faster); errors "
                  f"below {FLOAT32_FLOOR:.0e} (float32 rounding) count as equal.", "",
                  "| batch size | PyHessian | fastest labkit at equal or better accuracy |", "|---:|---|---:|", *ratio]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
