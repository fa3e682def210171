"""``python -m labkit list|reproduce|notebooks|cost|index|student|course|site``: the workbook's command line.

Exit codes: 0 every expected claim reproduced (or the command did what it was asked), 1 a claim was not
reproduced or a notebook failed, 2 a usage error (bad option values are refused before any kernel starts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from labkit.catalog import PILLARS, NotebookInfo, discover, read_info, repo_root, update_readme
from labkit.runtime import SCALES, pick_device

EXIT_CODES = """exit codes:
  0  every expected claim reproduced (or the command did what it was asked)
  1  a claim expected to hold was not reproduced, or a notebook failed
  2  a usage error (a bad option value, an unknown notebook): nothing was run"""


class UsageError(ValueError):
    """A bad command line: reported with exit code 2 before anything runs."""


def _root(args: argparse.Namespace) -> Path:
    root = Path(args.root).resolve() if getattr(args, "root", None) else repo_root()
    if not (root / "notebooks").is_dir():
        raise UsageError(f"--root {str(root)!r} has no notebooks/ folder (the workbook root holds notebooks/<pillar>/)")
    return root


def _select(args: argparse.Namespace, root: Path) -> list[NotebookInfo]:
    if args.notebook:
        infos = []
        for given in args.notebook:
            path = Path(given)
            if not path.is_file():
                known = "\n  ".join(str(i.path.relative_to(root)) for i in discover(root))
                raise UsageError(f"--notebook {given!r} does not exist. Known notebooks:\n  {known}")
            infos.append(read_info(path.resolve()))
        return infos
    infos = discover(root, pillar=args.pillar)
    if not infos:
        raise UsageError(f"no notebooks found under {root / 'notebooks'}")
    return infos


def _check_reproduce_options(args: argparse.Namespace) -> None:
    """Refuse bad values before any kernel starts (each message names the option)."""
    from labkit.sweep import parse_seeds

    if args.seeds is not None:
        try:
            args.seed_list = parse_seeds(args.seeds)
        except ValueError as exc:
            raise UsageError(f"--seeds: {exc}") from None
        if args.explorers:
            raise UsageError("--explorers works with one --seed (the explorers do not depend on the seed sweep)")
    elif args.merge_into is not None:
        raise UsageError("--merge-into needs --seeds (it merges a seed sweep into a published robustness.json)")
    if args.merge_into is not None and not str(args.merge_into).endswith(".json"):
        raise UsageError(f"--merge-into must name a robustness .json file, got {args.merge_into!r}")
    if args.address is not None and args.executor != "dask":
        raise UsageError("--address needs --executor dask (it names a running Dask scheduler)")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.timeout < 1:
        raise UsageError(f"--timeout must be at least 1 second, got {args.timeout}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UsageError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    try:
        pick_device(args.device)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--device: {exc}") from None


def cmd_list(args: argparse.Namespace) -> int:
    root = _root(args)
    infos = discover(root, pillar=args.pillar)
    if not infos:
        raise UsageError(f"no notebooks found under {root / 'notebooks'}")
    for info in infos:
        print(f"{info.name:45s} {info.title} ({info.authors}, {info.year})\n{'':45s} {info.url}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from labkit.costs import split_by_budget
    from labkit.runner import RunResult, run_all, write_report

    _check_reproduce_options(args)
    root = _root(args)
    infos = _select(args, root)
    out = Path(args.out)
    infos, skipped = split_by_budget(infos, scale=args.scale, device=args.device, max_minutes=args.max_minutes)
    for s in skipped:
        print(f"  {s.name}: {s.reason}")
    if args.seeds is not None:
        return _sweep(args, infos, out, skipped)
    print(f"labkit reproduce: {len(infos)} notebook(s), seed {args.seed}, scale {args.scale}, "
          f"device {args.device}, {args.jobs} at a time -> {out}/")
    results = run_all(infos, out, seed=args.seed, scale=args.scale, device=args.device, jobs=args.jobs,
                      resume=args.resume, timeout=args.timeout, explorers=args.explorers)
    results += [RunResult(s.name, 0.0, True, skip_reason=s.reason) for s in skipped]
    text, ok = write_report(out, results, seed=args.seed, scale=args.scale)
    print()
    print(text)
    if args.explorers:
        from labkit.explorer_report import write_explorer_report

        explorer_text, explorers_ok = write_explorer_report(out, [i.name for i in infos])
        print(explorer_text)
        print(f"explorers: {out / 'explorers.md'}")
        ok &= explorers_ok
    print(f"report: {out / 'claims.md'}, executed notebooks under {out}/<pillar>/")
    return 0 if ok else 1


def _sweep(args: argparse.Namespace, infos: list[NotebookInfo], out: Path, skipped: list) -> int:
    from labkit.runner import checkpoint_folder
    from labkit.sweep import execute, make_tasks, write_robustness

    seeds = args.seed_list
    if not infos:
        print("labkit reproduce: every selected notebook is over --max-minutes; nothing ran")
        return 0
    where = args.address or f"{args.jobs} local worker(s)"
    print(f"labkit reproduce: {len(infos)} notebook(s) x seeds {seeds}, scale {args.scale}, device {args.device}, "
          f"{args.executor} executor on {where} -> {out}/")
    # Long runs checkpoint under --out when the workers share this disk (local processes or a local cluster); the
    # workers of a remote scheduler need no shared disk, so they keep none. A fresh sweep never reuses old ones.
    keeps_checkpoints = args.address is None
    if keeps_checkpoints and not args.resume:
        for info in infos:
            shutil.rmtree(checkpoint_folder(out, info.name), ignore_errors=True)
    tasks = make_tasks(infos, seeds, scale=args.scale, device=args.device, timeout=args.timeout,
                       out_dir=out if keeps_checkpoints else None)
    began = time.perf_counter()
    results = execute(tasks, executor=args.executor, jobs=args.jobs, address=args.address)
    text, ok = write_robustness(out, results, seeds=seeds, scale=args.scale,
                                wall_seconds=time.perf_counter() - began,
                                skipped={s.name: s.reason for s in skipped})
    print()
    print(text)
    print(f"report: {out / 'robustness.md'} and {out / 'robustness.json'}, records under {out}/seed-<K>/")
    if args.merge_into is not None:
        from labkit.sweep import merge_into

        published = Path(args.merge_into)
        update = json.loads((out / "robustness.json").read_text())
        try:
            merged_text, merged_ok = merge_into(published, update, keep=[i.name for i in discover(_root(args))])
        except ValueError as exc:
            raise UsageError(f"--merge-into: {exc}") from None
        print(merged_text.splitlines()[2])
        print(f"merged into {published} (and {published.with_suffix('.md')})")
        ok &= merged_ok
    return 0 if ok else 1


def cmd_notebooks(args: argparse.Namespace) -> int:
    """Copy the paper notebooks into a folder a student can open (never overwriting without --force)."""
    root = _root(args)
    dest = Path(args.dest)
    infos = discover(root, pillar=args.pillar)
    targets = [(i.path, dest / i.pillar / i.path.name) for i in infos]
    existing = [t for _, t in targets if t.exists()]
    if existing and not args.force:
        raise UsageError(f"{len(existing)} notebook(s) already exist under {dest} (e.g. {existing[0]}); "
                         "pass --force to overwrite them")
    for source, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    print(f"copied {len(targets)} notebook(s) to {dest}/ (open them with `jupyter lab {dest}`)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    root = _root(args)
    ok = update_readme(root / "README.md", discover(root), write=args.write, root=root)
    return _generated_file_status("README notebook index", "index", ok=ok, write=args.write)


def _generated_file_status(what: str, command: str, *, ok: bool, write: bool) -> int:
    """Report on a generated file (up to date / rewritten / stale); exit code 1 only when stale and not written."""
    if ok:
        print(f"{what} is up to date")
        return 0
    print(f"{what} rewritten" if write else f"{what} is out of date: run `python -m labkit {command} --write`")
    return 0 if write else 1


def cmd_cost(args: argparse.Namespace) -> int:
    """Show (and with --write record) the measured time of each notebook from a report of labkit reproduce."""
    from labkit.costs import record_costs

    root = _root(args)
    lines = record_costs(discover(root), Path(args.source), write=args.write)
    if not lines:
        raise UsageError(f"--from {args.source!r}: no notebook of this workbook ran to the end in that report")
    print("\n".join(lines))
    print(f"recorded in {len(lines)} notebook(s)' metadata.labkit.cost" if args.write else
          "(pass --write to record these times in the notebooks' metadata.labkit.cost)")
    return 0


def cmd_student(args: argparse.Namespace) -> int:
    """Write the student edition (nbgrader's preprocessors: solutions become scaffolds, check cells locked)."""
    from labkit.course import write_student_edition

    root = _root(args)
    written = write_student_edition(discover(root, pillar=args.pillar), Path(args.out), force=args.force)
    print(f"wrote {len(written)} student notebook(s) under {args.out}/ (solutions removed, check cells locked)")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    """Check (or --write) notebooks/COURSE.md, the syllabus generated from the notebooks' metadata."""
    from labkit.course import update_course

    root = _root(args)
    ok = update_course(root / "notebooks" / "COURSE.md", discover(root), write=args.write)
    return _generated_file_status("notebooks/COURSE.md", "course", ok=ok, write=args.write)


def cmd_site(args: argparse.Namespace) -> int:
    """Build the static site from a report of labkit reproduce (no notebook is executed)."""
    from labkit.site import build_site

    index = build_site(Path(args.source), Path(args.out), root=_root(args))
    print(f"site written to {args.out}/ (open {index})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="The labkit workbook's command line.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    root_help = "the workbook folder holding notebooks/ (default: this checkout, else the installed package)"

    p_list = sub.add_parser("list", help="list the paper notebooks and their papers", epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p_list.add_argument("--pillar", choices=PILLARS)
    p_list.add_argument("--root", help=root_help)
    p_list.set_defaults(func=cmd_list)

    p_rep = sub.add_parser("reproduce", help="run notebooks headless and write a report of their claims",
                           epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_rep.add_argument("--pillar", choices=PILLARS, help="only this pillar's notebooks")
    p_rep.add_argument("--notebook", action="append", metavar="PATH", help="only this notebook (repeatable)")
    p_rep.add_argument("--seed", type=int, default=0, help="the notebooks' SEED (a non-negative integer)")
    p_rep.add_argument("--seeds", metavar="LIST",
                       help="run the notebook x seed grid, e.g. 0-4 or 0,2,5, and write robustness.md/.json")
    p_rep.add_argument("--executor", choices=("process", "dask"), default="process",
                       help="with --seeds: local processes, or Dask (a LocalCluster of --jobs single-thread "
                            "workers, or the scheduler at --address)")
    p_rep.add_argument("--address", metavar="tcp://HOST:PORT", help="with --executor dask: a running scheduler")
    p_rep.add_argument("--scale", choices=SCALES, default="teach")
    p_rep.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p_rep.add_argument("--out", default="build/report", help="report folder (default: build/report)")
    p_rep.add_argument("--jobs", type=int, default=1, help="notebooks run at once (default 1)")
    p_rep.add_argument("--resume", action="store_true",
                       help="skip notebooks that already reproduced in --out from the same notebook, labkit sources, "
                            "seed, scale and device (failed or changed ones run again, resuming their long runs "
                            "from the checkpoints in --out); with --seeds, keep the checkpoints of a cut-off sweep")
    p_rep.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (at least 1)")
    p_rep.add_argument("--max-minutes", type=float, default=None, metavar="N",
                       help="skip (and list) notebooks whose recorded time at this scale and device exceeds N "
                            "minutes (metadata.labkit.cost, see `labkit cost`); unmeasured ones run")
    p_rep.add_argument("--merge-into", metavar="PATH.json",
                       help="with --seeds: replace the swept notebooks' rows in this published robustness.json (and "
                            "its .md), keeping the other notebooks' rows (make robustness NOTEBOOKS=...)")
    p_rep.add_argument("--explorers", action="store_true",
                       help="after each notebook ran, move every control of its explorers in the same kernel and "
                            "write explorers.md (what each control recomputes, median response time); a control "
                            "that fails or changes nothing fails the run")
    p_rep.add_argument("--root", help=root_help)
    p_rep.set_defaults(func=cmd_reproduce)

    p_nb = sub.add_parser("notebooks", help="copy the paper notebooks into a folder to open and edit")
    p_nb.add_argument("dest", help="the folder to copy into (created if missing)")
    p_nb.add_argument("--pillar", choices=PILLARS)
    p_nb.add_argument("--force", action="store_true", help="overwrite notebooks already there")
    p_nb.add_argument("--root", help=root_help)
    p_nb.set_defaults(func=cmd_notebooks)

    p_cost = sub.add_parser("cost", help="record the measured time of each notebook from a reproduce report")
    p_cost.add_argument("--from", dest="source", default="build/report", help="the report folder (build/report)")
    p_cost.add_argument("--write", action="store_true", help="write the times into the notebooks' metadata")
    p_cost.add_argument("--root", help=root_help)
    p_cost.set_defaults(func=cmd_cost)

    p_stu = sub.add_parser("student", help="write the student edition of the notebooks (nbgrader)")
    p_stu.add_argument("--out", default="build/student", help="the folder to write (default: build/student)")
    p_stu.add_argument("--pillar", choices=PILLARS)
    p_stu.add_argument("--force", action="store_true", help="overwrite student notebooks already there")
    p_stu.add_argument("--root", help=root_help)
    p_stu.set_defaults(func=cmd_student)

    p_course = sub.add_parser("course", help="check (or --write) the syllabus notebooks/COURSE.md")
    p_course.add_argument("--write", action="store_true")
    p_course.add_argument("--root", help=root_help)
    p_course.set_defaults(func=cmd_course)

    p_site = sub.add_parser("site", help="build the static site from a reproduce report (Sphinx + MyST-NB)")
    p_site.add_argument("--from", dest="source", default="build/report", help="the report folder (build/report)")
    p_site.add_argument("--out", default="build/site", help="the site folder (default: build/site)")
    p_site.add_argument("--root", help=root_help)
    p_site.set_defaults(func=cmd_site)

    p_idx = sub.add_parser("index", help="check (or --write) the README's notebook index")
    p_idx.add_argument("--write", action="store_true")
    p_idx.add_argument("--root", help=root_help)
    p_idx.set_defaults(func=cmd_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself exits with 2 on unknown options
    try:
        return args.func(args)
    except (UsageError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
