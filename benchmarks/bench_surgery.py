"""labkit.dynamics.surgery.pcgrad against torchjd's PCGrad aggregator on the same gradients (issue #17).

Both implement Algorithm 1 of Yu et al., *Gradient Surgery for Multi-Task Learning* (arXiv 2001.06782): every
gradient is projected against the others it conflicts with, in a random order, and the results are summed.
torchjd draws each order with ``torch.randperm`` from torch's global generator; labkit draws it from a
``torch.Generator`` passed as ``generator=``. Seeding both identically gives both the same orders, so the two
results can be compared entry by entry for any number of gradients, not only for two.

    python benchmarks/bench_surgery.py [--repeats 15] [--out benchmarks/results/surgery.md]

Gradients: k rows of d standard normal entries, each row pushed against the first so that most pairs conflict;
one CPU thread, all in one process; timings are interleaved and the median over repeats is reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from labkit.dynamics.surgery import pcgrad
from labkit.runtime import setup


def make_grads(k: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    g[1:] -= 0.8 * g[:1]  # conflicts with the first gradient
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "surgery.md"))
    args = parser.parse_args()
    setup(0, "cpu", threads=1)
    try:
        import torchjd
        from torchjd.aggregation import PCGrad
        peer, reason = PCGrad(), ""
        version = torchjd.__version__ if hasattr(torchjd, "__version__") else "0.18.0"
    except Exception as exc:  # noqa: BLE001 - any import failure makes the peer "not runnable"
        peer, reason, version = None, f"{type(exc).__name__}: {exc}", "not installed"

    rows = []
    for k, d in [(2, 1_000), (2, 1_000_000), (4, 100_000), (8, 100_000)]:
        grads = make_grads(k, d)
        if peer is None:
            rows.append(f"| {k} | {d:,} | not runnable ({reason}) | | | |")
            continue

        def run_labkit(seed: int = 0, grads: torch.Tensor = grads) -> torch.Tensor:
            return pcgrad(grads, generator=torch.Generator().manual_seed(seed))

        def run_peer(seed: int = 0, grads: torch.Tensor = grads) -> torch.Tensor:
            torch.manual_seed(seed)
            return peer(grads)

        ours, theirs = run_labkit(), run_peer()
        diff = float((ours - theirs).abs().max())
        rel = diff / float(theirs.abs().max())
        g64 = grads.double()
        diff64 = float((pcgrad(g64, generator=torch.Generator().manual_seed(0))
                        - (torch.manual_seed(0), peer(g64))[1]).abs().max())
        for f in (run_labkit, run_peer):  # warm-up
            f()
        times: dict[str, list[float]] = {"labkit": [], "torchjd": []}
        for _ in range(args.repeats):
            for name, f in (("labkit", run_labkit), ("torchjd", run_peer)):
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
        med = {n: statistics.median(v) for n, v in times.items()}
        rows.append(f"| {k} | {d:,} | {med['labkit'] * 1e3:.3f} | {med['torchjd'] * 1e3:.3f} | "
                    f"{med['labkit'] / med['torchjd']:.2f} | {diff:.1e} (rel. {rel:.1e}); float64 {diff64:.1e} |")

    lines = [
        "# Gradient surgery: PCGrad",
        "",
        f"labkit `dynamics.surgery.pcgrad` against torchjd {version} `aggregation.PCGrad` on the same k x d gradient "
        "matrix, with the same projection orders (both seeded with 0). Median milliseconds per call over "
        f"{args.repeats} interleaved repeats, one CPU thread; max |labkit - torchjd| over the d entries of the result "
        "(float32, and the same in float64).",
        "",
        "| k | d | labkit ms | torchjd ms | ratio | max difference |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}. torchjd works on the "
        "k x k Gramian and forms the weighted sum once; labkit projects the rows directly (k^2 inner products of "
        "length d either way). Timings on a shared machine vary from run to run.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
