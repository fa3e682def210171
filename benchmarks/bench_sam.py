"""Step cost of SAM against plain SGD: one SAM step over one SGD step on a small CNN (issue #7).

Physical floor: 2.0 (SAM does two forward-backward passes where SGD does one); goal: <= 2.05.
Also times a reference SAM written the way the popular davda54/sam implementation does it (clone the
weights every step, subtract nothing, assign ``p.data = old_p``), for a side-by-side, and labkit's SAM driven by a
loop ported from davda54/sam (``loss.backward(); opt.step(closure)``): three passes, the trap ``SAM.step`` warns about.

    python benchmarks/bench_sam.py [--repeats 15] [--steps 10] [--out benchmarks/results/sam.md]

Batch 128 of 28x28 random inputs, one CPU thread (or the GPU when --device cuda), all in one process;
timings are interleaved and the median over repeats is reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.models import cnn
from labkit.runtime import setup
from labkit.sam import SAM


class ReferenceSAM(torch.optim.Optimizer):
    """SAM in the shape of davda54/sam (for timing only): clone-per-step backup, ``p.data`` restore."""

    def __init__(self, params, base_optimizer_cls, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def step(self, closure):
        loss = torch.enable_grad()(closure)()
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for g in self.param_groups for p in g["params"]
                                            if p.grad is not None]), p=2)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_(p.grad * scale.to(p))
        torch.enable_grad()(closure)()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sam.md"))
    args = parser.parse_args()
    device = setup(0, args.device, threads=1 if args.device == "cpu" else None)
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)

    def make(kind: str):
        torch.manual_seed(0)
        model = cnn(1, 10, channels=(16, 32), image_size=28, norm="batch").to(device)
        kw = dict(lr=0.01, momentum=0.9)
        ported = kind.startswith("labkit SAM, ported")
        if kind == "SGD":
            opt = torch.optim.SGD(model.parameters(), **kw)
        elif kind.startswith("labkit SAM"):
            opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, model=model, **kw)
        else:
            opt = ReferenceSAM(model.parameters(), torch.optim.SGD, rho=0.05, **kw)

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        def step():
            if ported:  # davda54/sam's loop: the first backward by hand, then step(closure)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
            return opt.step(closure)

        return step

    kinds = ["SGD", "labkit SAM", "reference SAM (davda54 shape)", "labkit SAM, ported davda54 loop (warns)"]
    setups = {k: make(k) for k in kinds}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the ported loop's warning, once
        for step in setups.values():  # warm-up
            for _ in range(5):
                step()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            step = setups[k]
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[k].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    # ratio per repeat (adjacent blocks share the machine's state), then the median
    ratios = {k: statistics.median(a / b for a, b in zip(times[k], times["SGD"], strict=True)) for k in kinds}
    lines = [
        "# SAM step cost",
        "",
        f"One optimizer step on `cnn(1, 10, channels=(16, 32), image_size=28, norm='batch')`, batch 128 of 28x28 "
        f"random inputs, {device.type} ({torch.get_num_threads()} thread(s)), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}; median of {args.repeats} interleaved blocks of "
        f"{args.steps} steps. Floor 2.0 (two forward-backward passes), goal <= 2.05; the ported loop runs three.",
        "",
        "| optimizer | ms / step | ratio to SGD |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {med[k] * 1e3:.2f} | {ratios[k]:.3f} |" for k in kinds]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
