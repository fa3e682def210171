"""Run every ``benchmarks/bench_*.py`` one after the other (never in parallel: timings need a quiet machine).

Each script times labkit side by side with its peer library in one process and writes a markdown table to
``benchmarks/results/<pillar>.md``; this driver prints those tables. ``python benchmarks/run.py sam`` runs one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
        if not scripts:
            print(f"error: no benchmark named {names}; known: "
                  f"{[s.stem.removeprefix('bench_') for s in sorted(HERE.glob('bench_*.py'))]}", file=sys.stderr)
            return 2
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        failed += proc.returncode != 0
        print(f"   ({time.perf_counter() - start:.0f} s, exit {proc.returncode})")
        result = HERE / "results" / f"{script.stem.removeprefix('bench_')}.md"
        if result.exists():
            print(result.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
