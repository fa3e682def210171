"""labkit Integrated Gradients and SmoothGrad vs Captum (and zennit when installed), one CPU thread.

Batch 64, 50 steps / samples, a small CNN (``labkit.models.cnn(channels=(16, 32))``) on 1x8x8 and
1x28x28 inputs. Captum is timed with its default and with the best ``internal_batch_size`` /
``nt_samples_batch_size`` of a sweep. Writes a markdown table to benchmarks/results/attributions.md.

    python benchmarks/bench_attributions.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from labkit.attributions import integrated_gradients, smoothgrad
from labkit.models import cnn

BATCH, STEPS = 64, 50
OUT = Path(__file__).resolve().parent / "results" / "attributions.md"


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Best (minimum) wall time in ms of ``repeats`` calls after one warm-up call: the least noisy
    estimate on a shared machine (as ``timeit`` recommends)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return min(times)


def bench_size(size: int, repeats: int, quick: bool) -> list[tuple[str, str, float]]:
    torch.manual_seed(0)
    model = cnn(1, 10, channels=(16, 32), image_size=size).eval()
    x = torch.rand(BATCH, 1, size, size)
    t = torch.randint(0, 10, (BATCH,))
    rows: list[tuple[str, str, float]] = []
    rows.append(
        (
            "IG",
            "labkit (chunk_size=auto)",
            timed(lambda: integrated_gradients(model, x, t, steps=STEPS), repeats),
        )
    )
    rows.append(
        (
            "SmoothGrad",
            "labkit (chunk_size=auto)",
            timed(
                lambda: smoothgrad(model, x, t, samples=STEPS, generator=torch.Generator().manual_seed(0)),
                repeats,
            ),
        )
    )
    try:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    except ImportError:
        return rows
    ig = IntegratedGradients(model)
    rows.append(("IG", "Captum default", timed(lambda: ig.attribute(x, target=t, n_steps=STEPS), repeats)))
    sweep = (64, 256, 1024) if quick else (64, 128, 256, 512, 1024, 1600)
    best = min(
        (timed(lambda b=b: ig.attribute(x, target=t, n_steps=STEPS, internal_batch_size=b), repeats), b)
        for b in sweep
    )
    rows.append(("IG", f"Captum best internal_batch_size={best[1]}", best[0]))
    nt = NoiseTunnel(Saliency(model))

    def captum_sg(b: int | None) -> Callable[[], object]:
        return lambda: nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=STEPS,
            stdevs=0.15,
            target=t,
            abs=False,
            nt_samples_batch_size=b,
        )

    rows.append(("SmoothGrad", "Captum default", timed(captum_sg(None), repeats)))
    sweep = (1, 5, 25) if quick else (1, 2, 5, 10, 25)
    best = min((timed(captum_sg(b), repeats), b) for b in sweep)
    rows.append(("SmoothGrad", f"Captum best nt_samples_batch_size={best[1]}", best[0]))
    try:
        from zennit.attribution import IntegratedGradients as ZIG
    except ImportError:
        return rows

    def zennit_ig() -> None:
        with ZIG(model, n_iter=STEPS) as attributor:
            attributor(x, torch.eye(10)[t])

    rows.append(("IG", "zennit", timed(zennit_ig, repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sweeps (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Attribution benchmark: labkit vs peers",
        "",
        f"CPU, 1 thread, torch {torch.__version__}, {platform.machine()}; batch {BATCH}, "
        f"{STEPS} steps/samples, cnn(channels=(16, 32)); best of {args.repeats} runs after a warm-up.",
        "",
        "| input | method | implementation | ms | labkit speed-up vs this |",
        "|---|---|---|---:|---:|",
    ]
    for size in (8, 28):
        rows = bench_size(size, args.repeats, args.quick)
        ours = {m: ms for m, impl, ms in rows if impl.startswith("labkit")}
        for method, impl, ms in rows:
            lines.append(f"| 1x{size}x{size} | {method} | {impl} | {ms:.1f} | {ms / ours[method]:.2f}x |")
            print(lines[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
