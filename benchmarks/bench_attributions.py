"""labkit Integrated Gradients and SmoothGrad vs Captum and zennit (when it imports), one CPU thread.

Batch 64, 50 steps / samples, a small CNN (``labkit.models.cnn(channels=(16, 32))``) on 1x8x8 and
1x28x28 inputs. Captum is timed with its default and with the best ``internal_batch_size`` /
``nt_samples_batch_size`` of a sweep; zennit 0.5 has no batch option (one pass of the batch per step).
All implementations of one input size are timed in interleaved rounds (so a load change on a shared
machine hits them alike) and each keeps its best round. Writes a markdown table to
benchmarks/results/attributions.md.

    python benchmarks/bench_attributions.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from labkit.attributions import integrated_gradients, smoothgrad
from labkit.models import cnn

BATCH, STEPS, NOISE = 64, 50, 0.15
OUT = Path(__file__).resolve().parent / "results" / "attributions.md"

# (method, implementation, group, fn): rows of one group are a sweep of which only the best is reported
Case = tuple[str, str, str, Callable[[], object]]


def interleaved_best(cases: list[Case], repeats: int) -> list[float]:
    """Best (minimum) wall time in ms of each case over ``repeats`` rounds that call every case once,
    after one warm-up call each: the least noisy estimate on a shared machine (as ``timeit`` says)."""
    for *_, fn in cases:
        fn()
    best = [float("inf")] * len(cases)
    for _ in range(repeats):
        for i, (*_, fn) in enumerate(cases):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], 1e3 * (time.perf_counter() - t0))
    return best


@functools.cache
def import_zennit() -> tuple[type, type] | str:
    """zennit's attributors, or why they cannot be used here (zennit imports torchvision at top level).

    Tried once: after a failed package import ``zennit.attribution`` stays in ``sys.modules``, so a
    second try would "succeed" with a half-imported package."""
    try:
        from zennit.attribution import IntegratedGradients, SmoothGrad
    except Exception as err:  # a torchvision built for another torch raises RuntimeError, not ImportError
        return f"{type(err).__name__}: {err}".splitlines()[0][:120]
    return IntegratedGradients, SmoothGrad


def bench_size(size: int, repeats: int, quick: bool) -> tuple[list[tuple[str, str, float]], list[str]]:
    torch.manual_seed(0)
    model = cnn(1, 10, channels=(16, 32), image_size=size).eval()
    x = torch.rand(BATCH, 1, size, size)
    t = torch.randint(0, 10, (BATCH,))
    cases: list[Case] = [
        ("IG", "labkit (chunk_size=auto)", "labkit IG", lambda: integrated_gradients(model, x, t, steps=STEPS)),
        (
            "SmoothGrad",
            "labkit (chunk_size=auto)",
            "labkit SG",
            lambda: smoothgrad(model, x, t, samples=STEPS, noise=NOISE, generator=torch.Generator().manual_seed(0)),
        ),
    ]
    missing: list[str] = []
    try:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    except ImportError as err:
        missing.append(f"Captum: not installed ({err})")
    else:
        ig = IntegratedGradients(model)
        cases.append(("IG", "Captum default", "captum IG default", lambda: ig.attribute(x, target=t, n_steps=STEPS)))
        for b in (64, 256, 1024) if quick else (64, 128, 256, 512, 1024, 1600):
            cases.append(
                (
                    "IG",
                    f"Captum best internal_batch_size={b}",
                    "captum IG sweep",
                    lambda b=b: ig.attribute(x, target=t, n_steps=STEPS, internal_batch_size=b),
                )
            )
        nt = NoiseTunnel(Saliency(model))

        def captum_sg(b: int | None) -> Callable[[], object]:
            return lambda: nt.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=STEPS,
                stdevs=NOISE,
                target=t,
                abs=False,
                nt_samples_batch_size=b,
            )

        cases.append(("SmoothGrad", "Captum default", "captum SG default", captum_sg(None)))
        for b in (1, 5, 25) if quick else (1, 2, 5, 10, 25):
            cases.append(("SmoothGrad", f"Captum best nt_samples_batch_size={b}", "captum SG sweep", captum_sg(b)))
    zennit = import_zennit()
    if isinstance(zennit, str):
        missing.append(f"zennit: not installed ({zennit})")
    else:
        zig, zsg = zennit
        onehot = torch.eye(10)[t]  # zennit's output gradient: the target logit of each example

        def zennit_ig() -> None:
            with zig(model, n_iter=STEPS) as attributor:
                attributor(x, onehot)

        def zennit_sg() -> None:
            with zsg(model, noise_level=NOISE, n_iter=STEPS) as attributor:
                attributor(x, onehot)

        cases.append(("IG", "zennit (one pass per step)", "zennit IG", zennit_ig))
        cases.append(("SmoothGrad", "zennit (one pass per sample)", "zennit SG", zennit_sg))
    times = interleaved_best(cases, repeats)
    best: dict[str, tuple[float, str, str]] = {}
    for (method, impl, group, _), ms in zip(cases, times, strict=True):
        if group not in best or ms < best[group][0]:
            best[group] = (ms, method, impl)
    return [(method, impl, ms) for ms, method, impl in best.values()], missing


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
        f"{STEPS} steps/samples, cnn(channels=(16, 32)); best of {args.repeats} interleaved rounds "
        "after a warm-up.",
        "",
        "| input | method | implementation | ms | labkit speed-up vs this |",
        "|---|---|---|---:|---:|",
    ]
    for size in (8, 28):
        rows, missing = bench_size(size, args.repeats, args.quick)
        ours = {m: ms for m, impl, ms in rows if impl.startswith("labkit")}
        for method, impl, ms in rows:
            lines.append(f"| 1x{size}x{size} | {method} | {impl} | {ms:.1f} | {ms / ours[method]:.2f}x |")
            print(lines[-1], flush=True)
        for reason in missing:
            lines.append(f"| 1x{size}x{size} | IG, SmoothGrad | {reason} | - | - |")
            print(lines[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
