"""Influence estimators against their peers on one small MLP and the same data (issue #16).

* EK-FAC: labkit's ``fit_ekfac`` + scoring against kronfluence's EK-FAC (``Analyzer.fit_all_factors`` +
  ``compute_pairwise_scores``): wall time to fit the factors and score q x n pairs, and the mean per-query Spearman
  correlation with the exact damped Gauss–Newton influence (dense float64 solve, damping 0.1 x the GGN's mean
  eigenvalue as Grosse et al., arXiv 2308.03296, Sec. 2.2; the same absolute damping is given to both).
* TracIn: labkit's ``tracin`` against Captum's ``TracInCP`` on the same three checkpoints: time and the largest
  absolute difference of the scores.

    python benchmarks/bench_influence.py [--repeats 3] [--out benchmarks/results/influence.md]

A 64-32-10 tanh MLP trained on 1000 digits, 50 queries, one CPU thread, all in one process; times are medians.
A peer that does not import or run is shown as "not runnable (reason)".
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.data import digits
from labkit.influence import exact_ggn, fit_ekfac, per_example_grads, tracin
from labkit.influence.influence_experiments import spearman, train_mlp


def mean_spearman(scores: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(spearman(scores[j], exact[j]) for j in range(len(exact))) / len(exact)


def labkit_ekfac(model, train, query, damping):
    factors = fit_ekfac(model, F.cross_entropy, train)
    g_train = per_example_grads(model, F.cross_entropy, train).double()
    g_query = per_example_grads(model, F.cross_entropy, query).double()
    return g_query @ factors.inverse_hvp(g_train, damping=damping).T


def kronfluence_ekfac(model, train, query, damping, workdir):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    import copy

    task = Classification()
    peer_model = prepare_model(copy.deepcopy(model), task)
    analyzer = Analyzer("bench", model=peer_model, task=task, cpu=True, disable_tqdm=True, output_dir=workdir)
    train_ds, query_ds = TensorDataset(*train), TensorDataset(*query)
    analyzer.fit_all_factors("ekfac", dataset=train_ds, per_device_batch_size=len(train[0]),
                             factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
    analyzer.compute_pairwise_scores("scores", factors_name="ekfac", query_dataset=query_ds, train_dataset=train_ds,
                                     per_device_query_batch_size=len(query[0]),
                                     per_device_train_batch_size=len(train[0]),
                                     score_args=ScoreArguments(damping_factor=damping), overwrite_output_dir=True)
    return analyzer.load_pairwise_scores("scores")["all_modules"].double()


def captum_tracin(ckpts, lrs, train, query, workdir):
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    paths = []
    for k, (m, lr) in enumerate(zip(ckpts, lrs, strict=True)):
        path = Path(workdir) / f"ckpt{k}.pt"
        torch.save({"state": m.state_dict(), "lr": lr}, path)
        paths.append(str(path))

    def load(model, path):
        saved = torch.load(path)
        model.load_state_dict(saved["state"])
        return saved["lr"]

    import copy

    peer = TracInCP(copy.deepcopy(ckpts[0]), TensorDataset(*train), paths, checkpoints_load_func=load,
                    loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), batch_size=len(train[0]))
    return peer.influence(query)


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/influence.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    data = digits(seed=0)
    train = (data.train_x[:1000], data.train_y[:1000])
    query = (data.test_x[:50], data.test_y[:50])
    generator = torch.Generator().manual_seed(0)
    model = train_mlp(train, hidden=32, steps=500, lr=0.01, generator=generator)

    start = time.perf_counter()
    ggn = exact_ggn(model, F.cross_entropy, train)
    damping = 0.1 * float(torch.trace(ggn)) / len(ggn)
    g_train = per_example_grads(model, F.cross_entropy, train).double()
    g_query = per_example_grads(model, F.cross_entropy, query).double()
    exact = g_query @ torch.linalg.solve(ggn + damping * torch.eye(len(ggn), dtype=ggn.dtype), g_train.T)
    exact_seconds = time.perf_counter() - start

    rows = [("exact damped GGN (labkit, dense solve)", f"{exact_seconds:.2f}", "1.000", "reference")]
    t, scores = timed(lambda: labkit_ekfac(model, train, query, damping), args.repeats)
    rows.append(("labkit EK-FAC (fit + score)", f"{t:.2f}", f"{mean_spearman(scores, exact):.3f}", ""))
    lab_ekfac = t
    with tempfile.TemporaryDirectory() as workdir:
        try:
            t, scores = timed(lambda: kronfluence_ekfac(model, train, query, damping, workdir), args.repeats)
            rows.append(("kronfluence 1.0.1 EK-FAC (fit + score)", f"{t:.2f}", f"{mean_spearman(scores, exact):.3f}",
                         f"labkit/kronfluence time {lab_ekfac / t:.2f}"))
        except Exception as exc:  # noqa: BLE001 - a peer that does not run gets its row
            rows.append(("kronfluence 1.0.1 EK-FAC", "-", "-", f"not runnable ({type(exc).__name__}: {exc})"[:160]))

        ckpts = [train_mlp(train, hidden=32, steps=s, lr=0.01, generator=torch.Generator().manual_seed(0))
                 for s in (100, 250, 500)]
        lrs = [0.01, 0.01, 0.01]
        t_lab, ours = timed(lambda: tracin(ckpts, F.cross_entropy, train, query, lrs=lrs), args.repeats)
        tracin_rows = [("labkit tracin", f"{t_lab:.2f}", "", "")]
        try:
            t_peer, theirs = timed(lambda: captum_tracin(ckpts, lrs, train, query, workdir), args.repeats)
            diff = float((ours - theirs).abs().max())
            scale = float(theirs.abs().max())
            tracin_rows.append(("Captum TracInCP", f"{t_peer:.2f}", f"{diff:.2e} (scores up to {scale:.2e})",
                                f"labkit/Captum time {t_lab / t_peer:.2f}"))
        except Exception as exc:  # noqa: BLE001
            tracin_rows.append(("Captum TracInCP", "-", "-", f"not runnable ({type(exc).__name__}: {exc})"[:160]))

    lines = [
        "# Influence: labkit against kronfluence (EK-FAC) and Captum (TracInCP)",
        "",
        f"64-32-10 tanh MLP (P = {len(ggn)}), 1000 training digits x 50 queries, one CPU thread, median of "
        f"{args.repeats}; torch {torch.__version__}, {platform.processor() or platform.machine()}. "
        f"Damping {damping:.3e} (0.1 x mean GGN eigenvalue) for every estimator.",
        "",
        "| EK-FAC | seconds | mean Spearman with exact | note |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "| TracInCP (3 checkpoints) | seconds | max abs difference | note |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in tracin_rows],
        "",
        "labkit's EK-FAC takes the expectation over the model's labels exactly (one backward pass per output); "
        "kronfluence samples one label per example (the true Fisher by Monte Carlo). Times include writing "
        "kronfluence's factors to a temporary directory.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
