"""The experiment layer every notebook starts with: ``run = labkit.start(seed=..., scale=..., device=...)``.

A :class:`Run` holds the seed, the scale (``"teach"`` or ``"paper"``), the device, the configuration
selected for that scale (read-only) and named random streams derived from the seed, so no notebook adds
offsets to ``SEED``. ``check_claims(claims, run=run)`` records all of it with the claims.

The generator rule of labkit: generators are CPU generators unless a caller passes another one; random
numbers are drawn on the generator's device and then moved to the data's device (see
:mod:`labkit.autograd`). So a seed gives the same draws on CPU and CUDA; the arithmetic that follows can
still differ in the last bits between devices.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

SCALES = ("teach", "paper")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Return a ``torch.device``: ``"auto"`` picks CUDA when present, else CPU.

    Raises ``ValueError`` for an unknown name, ``"cuda"`` on a machine without CUDA, and ``"mps"``
    (labkit's float64 reference paths do not run there).
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r} (labkit's float64 "
                         "reference computations are not supported on other backends)")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available on this machine")
    return chosen


def check_scale(scale: str) -> str:
    """Validate a notebook ``SCALE`` value (``"teach"`` or ``"paper"``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def check_seed(seed: object) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global is the point here
    torch.manual_seed(seed)


def set_threads(device: torch.device, threads: int | None) -> None:
    """``threads=None``: one thread on CPU (small models are fastest that way on a shared 2-core machine),
    torch's default on CUDA; ``LABKIT_THREADS`` overrides the default."""
    if threads is None:
        env = os.environ.get("LABKIT_THREADS")
        threads = int(env) if env else (1 if device.type == "cpu" else None)
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)


def setup(seed: int = 0, device: str | torch.device = "auto", threads: int | None = None) -> torch.device:
    """Seed everything, pick the device and set torch's CPU thread count; return the device.

    The older entry point; notebooks use :func:`start`, which does this and returns a :class:`Run`.
    """
    chosen = pick_device(device)
    seed_everything(seed)
    set_threads(chosen, threads)
    return chosen


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device`` (for explicit ``generator=`` arguments)."""
    gen = torch.Generator(device=pick_device(device))
    gen.manual_seed(seed)
    return gen


def derive_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the stream ``name`` of ``seed`` (a hash: streams are independent of each other)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a random stream needs a non-empty name, got {name!r}")
    digest = hashlib.blake2b(f"{check_seed(seed)}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Config(Mapping[str, Any]):
    """A read-only configuration: ``config["steps"]`` or ``config.steps``."""

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"config has no entry {key!r}; it has {sorted(self._values)}") from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no entry {key!r}; it has {sorted(self._values)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("a Run's config is read-only; change the notebook's config dictionary instead")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def replace(self, **changes: Any) -> Config:
        """A copy with some entries changed (for explorers and exercises)."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise KeyError(f"config has no entries {sorted(unknown)}; it has {sorted(self._values)}")
        return Config({**self._values, **changes})


def select_config(config: Mapping[str, Any] | None, scale: str) -> Config:
    """``config`` is either ``{"teach": {...}, "paper": {...}}`` (one entry per scale) or one flat mapping."""
    if config is None:
        return Config({})
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    if set(config) & set(SCALES):
        missing = [s for s in SCALES if s not in config]
        if missing:
            raise ValueError(f"config must give an entry for every scale {SCALES}; missing {missing}")
        chosen = config[scale]
        if not isinstance(chosen, Mapping):
            raise TypeError(f"config[{scale!r}] must be a mapping, got {type(chosen).__name__}")
        return Config(chosen)
    return Config(config)


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (this package by default), or None."""
    here = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _parent_cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a for a in raw.decode(errors="replace").split("\0") if a]


def detect_runner() -> tuple[str, str | None]:
    """How this process runs: ``("labkit reproduce" | "papermill" | "jupyter" | "python", notebook)``.

    ``labkit reproduce`` sets ``LABKIT_NOTEBOOK``; a papermill kernel is a child of the papermill
    process, whose command line names the input notebook.
    """
    if os.environ.get("LABKIT_NOTEBOOK"):
        return "labkit reproduce", os.environ["LABKIT_NOTEBOOK"]
    cmdline = _parent_cmdline()
    if any("papermill" in Path(a).name for a in cmdline[:3]):
        notebooks = [a for a in cmdline if a.endswith(".ipynb")]
        return "papermill", (notebook_name(Path(notebooks[0])) if notebooks else None)
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return "jupyter", notebook_name(Path(session))
    from labkit.repro import in_notebook

    return ("jupyter" if in_notebook() else "python"), None


def notebook_name(path: Path) -> str:
    """``<pillar>/<stem>`` for a workbook notebook path, else the file stem."""
    parts = path.with_suffix("").parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else path.stem


@dataclass(frozen=True)
class Run:
    """One experiment: its seed, scale, device, read-only config and named random streams.

    Made by :func:`start`. ``run.generator("data")`` is a fresh CPU generator at the start of the
    stream ``"data"`` (the same name always gives the same numbers; keep it to draw several times);
    ``with run.seeded("init"): ...`` seeds torch's global generator for code that takes no generator
    (a module's default initialisation) and restores it afterwards.
    """

    seed: int
    scale: str
    device: torch.device
    config: Config = field(default_factory=lambda: Config({}))
    notebook: str | None = None
    runner: str = "python"
    checkpoints: Path | None = None

    def seed_for(self, name: str) -> int:
        """The integer seed of the stream ``name``."""
        return derive_seed(self.seed, name)

    def generator(self, name: str, *, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh generator at the start of the stream ``name`` (on the CPU unless asked otherwise)."""
        return make_generator(self.seed_for(name), device)

    @contextlib.contextmanager
    def seeded(self, name: str) -> Iterator[None]:
        """Seed torch's global generators from the stream ``name`` for the block, then restore them."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed_for(name))
            yield

    def checkpoint(self, name: str) -> Path | None:
        """The checkpoint file of the long run ``name`` (``fit(checkpoint=...)``, ``modular_run(checkpoint=...)``):
        ``<checkpoints>/seed<seed>-<scale>/<name>.pt`` when this run has a checkpoint folder, else None (nothing
        is written). ``labkit reproduce`` and the seed sweep give each notebook a folder inside their ``--out``,
        so a notebook interrupted or timed out there resumes its finished and half-finished runs when run again
        (``--resume``); in JupyterLab pass ``labkit.start(..., checkpoints="some/folder")``."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string naming the run, got {name!r}")
        if self.checkpoints is None:
            return None
        slug = "".join(c if c.isalnum() or c in "._-=" else "_" for c in name.strip())
        return self.checkpoints / f"seed{self.seed}-{self.scale}" / f"{slug}.pt"

    def record(self) -> dict[str, Any]:
        """What produced a result: seed, scale, device, versions, git commit and how the notebook ran."""
        import labkit

        return {
            "seed": self.seed, "scale": self.scale, "device": str(self.device), "notebook": self.notebook,
            "runner": self.runner, "labkit": labkit.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "git_commit": git_commit(),
            "config": {k: _plain(v) for k, v in self.config.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def start(
    *,
    seed: int = 0,
    scale: str = "teach",
    device: str | torch.device = "auto",
    config: Mapping[str, Any] | None = None,
    threads: int | None = None,
    notebook: str | None = None,
    checkpoints: str | os.PathLike | None = None,
) -> Run:
    """Start an experiment: validate the parameters, seed the global generators, pick the device, set the
    thread count, select ``config[scale]``; return the :class:`Run`.

    ``config`` is ``{"teach": {...}, "paper": {...}}`` or one mapping for both scales. ``notebook`` names
    the claim record; by default it is found from ``labkit reproduce``, papermill or JupyterLab. ``checkpoints``
    (a folder; default ``$LABKIT_CHECKPOINTS``, set by ``labkit reproduce``) is where :meth:`Run.checkpoint` puts
    the long runs' checkpoints; without one nothing is written.
    """
    check_seed(seed)
    check_scale(scale)
    chosen = pick_device(device)
    selected = select_config(config, scale)
    seed_everything(seed)
    set_threads(chosen, threads)
    runner, found = detect_runner()
    folder = checkpoints if checkpoints is not None else os.environ.get("LABKIT_CHECKPOINTS") or None
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"checkpoints must be a folder path (str or os.PathLike) or None, got {type(folder).__name__}")
    return Run(seed=seed, scale=scale, device=chosen, config=selected, notebook=notebook or found, runner=runner,
               checkpoints=None if folder is None else Path(folder))


__all__ = ["SCALES", "Config", "Run", "check_scale", "derive_seed", "make_generator", "pick_device",
           "seed_everything", "setup", "start"]

