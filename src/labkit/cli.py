"""``python -m labkit list|reproduce|index``: the workbook's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit.catalog import PILLARS, NotebookInfo, discover, read_info, repo_root, update_readme
from labkit.runtime import SCALES


def _select(args: argparse.Namespace, root: Path) -> list[NotebookInfo]:
    if args.notebook:
        infos = []
        for given in args.notebook:
            path = Path(given)
            if not path.is_file():
                known = "\n  ".join(str(i.path.relative_to(root)) for i in discover(root))
                raise SystemExit(f"error: --notebook {given!r} does not exist. Known notebooks:\n  {known}")
            infos.append(read_info(path.resolve()))
        return infos
    infos = discover(root, pillar=args.pillar)
    if not infos:
        raise SystemExit(f"error: no notebooks found under {root / 'notebooks'}")
    return infos


def cmd_list(args: argparse.Namespace) -> int:
    root = repo_root()
    for info in discover(root, pillar=args.pillar):
        print(f"{info.name:45s} {info.title} ({info.authors}, {info.year})\n{'':45s} {info.url}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from labkit.runner import run_all, write_report

    root = repo_root()
    infos = _select(args, root)
    out = Path(args.out)
    print(f"labkit reproduce: {len(infos)} notebook(s), seed {args.seed}, scale {args.scale}, "
          f"device {args.device}, {args.jobs} at a time -> {out}/")
    results = run_all(infos, out, seed=args.seed, scale=args.scale, device=args.device, jobs=args.jobs,
                      resume=args.resume, timeout=args.timeout)
    text, ok = write_report(out, results, seed=args.seed, scale=args.scale)
    print()
    print(text)
    print(f"report: {out / 'claims.md'}, executed notebooks under {out}/<pillar>/")
    return 0 if ok else 1


def cmd_index(args: argparse.Namespace) -> int:
    root = repo_root()
    ok = update_readme(root / "README.md", discover(root), write=args.write, root=root)
    if ok:
        print("README notebook index is up to date")
        return 0
    print("README notebook index rewritten" if args.write else
          "README notebook index is out of date: run `python -m labkit index --write`")
    return 0 if args.write else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="The labkit workbook's command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list the paper notebooks and their papers")
    p_list.add_argument("--pillar", choices=PILLARS)
    p_list.set_defaults(func=cmd_list)

    p_rep = sub.add_parser("reproduce", help="run notebooks headless and write a report of their claims")
    p_rep.add_argument("--pillar", choices=PILLARS, help="only this pillar's notebooks")
    p_rep.add_argument("--notebook", action="append", metavar="PATH", help="only this notebook (repeatable)")
    p_rep.add_argument("--seed", type=int, default=0)
    p_rep.add_argument("--scale", choices=SCALES, default="teach")
    p_rep.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p_rep.add_argument("--out", default="build/report", help="report folder (default: build/report)")
    p_rep.add_argument("--jobs", type=int, default=1, help="notebooks run at once (default 1)")
    p_rep.add_argument("--resume", action="store_true", help="skip notebooks already reproduced in --out")
    p_rep.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    p_rep.set_defaults(func=cmd_reproduce)

    p_idx = sub.add_parser("index", help="check (or --write) the README's notebook index")
    p_idx.add_argument("--write", action="store_true")
    p_idx.set_defaults(func=cmd_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        raise SystemExit("error: --jobs must be at least 1")
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
