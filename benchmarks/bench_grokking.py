"""Grokking pillar timings on one CPU thread (issue #5): the fast paths against their textbook versions.

- one full-batch AdamW step of the one-hot MLP 2x128 on p = 59 (40% of the table): ``OneHotMLP`` (an
  embedding gather) against ``labkit.models.mlp`` on explicit one-hot inputs (a (N, 2p) matmul);
- one full-batch AdamW step of the one-layer transformer on p = 59: last position only
  (``OneLayerTransformer.forward``) against the full causal sequence (``forward_full``);
- the step overhead of ⊥AdamW (``PerpGrad``) and Grokfast-EMA over plain AdamW, and of the StableMax
  cross-entropy (float64) over the float32 softmax cross-entropy.

    python benchmarks/bench_grokking.py [--repeats 30] [--out benchmarks/results/grokking.md]

Timings are the median over ``repeats`` steps after warm-up; variants are interleaved so that a busy
machine slows them alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.grokking import make_optimizer, stablemax_cross_entropy
from labkit.grokking.models import OneHotMLP, OneLayerTransformer
from labkit.grokking.modular import modular_arithmetic
from labkit.models import mlp
from labkit.runtime import setup

OUT = Path(__file__).resolve().parent / "results" / "grokking.md"


def step_fn(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
            loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> Callable[[], None]:
    forward = forward or model

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        value = loss(forward(x), y)
        value.backward()
        return value

    return lambda: opt.step(closure)


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median ms per call, variants interleaved, after three warm-up calls each."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    setup(0, "cpu", threads=1)
    p = 59
    data = modular_arithmetic(p, train_fraction=0.4, seed=0)
    x, y = data.train_x, data.train_y
    one_hot = torch.cat([F.one_hot(x[:, 0], p), F.one_hot(x[:, 1], p)], 1).float()

    fast = OneHotMLP(p, hidden=(128, 128))
    dense = mlp(2 * p, [128, 128], p)
    fns = {
        "OneHotMLP (gather)": step_fn(fast, make_optimizer(fast, lr=1e-3), x, y),
        "mlp on one-hot inputs": step_fn(dense, make_optimizer(dense, lr=1e-3), one_hot, y),
    }
    mlp_times = interleaved(fns, args.repeats)

    tf_fast, tf_full = OneLayerTransformer(p), OneLayerTransformer(p)
    fns = {
        "transformer, last position": step_fn(tf_fast, make_optimizer(tf_fast, lr=1e-3), x, y),
        "transformer, full sequence": step_fn(tf_full, make_optimizer(tf_full, lr=1e-3), x, y,
                                              forward=lambda inp: tf_full.forward_full(inp)[:, -1]),
    }
    tf_times = interleaved(fns, args.repeats)

    models = {name: OneHotMLP(p, hidden=(128, 128)) for name in ("adamw", "perp_adamw", "grokfast_adamw", "stable")}
    fns = {
        "AdamW + softmax CE": step_fn(models["adamw"], make_optimizer(models["adamw"], "adamw", lr=1e-3), x, y),
        "⊥AdamW + softmax CE": step_fn(models["perp_adamw"], make_optimizer(models["perp_adamw"], "perp_adamw",
                                                                         lr=1e-3), x, y),
        "Grokfast-EMA AdamW + softmax CE": step_fn(models["grokfast_adamw"],
                                                   make_optimizer(models["grokfast_adamw"], "grokfast_adamw",
                                                                  lr=1e-3), x, y),
        "AdamW + StableMax CE (float64)": step_fn(models["stable"], make_optimizer(models["stable"], lr=1e-3), x, y,
                                                  loss=stablemax_cross_entropy),
    }
    opt_times = interleaved(fns, args.repeats)

    base = opt_times["AdamW + softmax CE"]
    lines = [
        "# Grokking pillar timings",
        "",
        f"One CPU thread, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"p = {p}, {len(y)} training pairs, median of {args.repeats} full-batch steps (ms).",
        "",
        "| comparison | variant | ms / step | ratio |",
        "|---|---|---:|---:|",
    ]
    for title, times, ref in (("one-hot MLP 2x128", mlp_times, "mlp on one-hot inputs"),
                              ("1-layer transformer", tf_times, "transformer, full sequence"),
                              ("interventions (MLP)", opt_times, "AdamW + softmax CE")):
        for name, ms in times.items():
            lines.append(f"| {title} | {name} | {ms:.2f} | {ms / times[ref]:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"(plain AdamW step {base:.2f} ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
