"""Graded exercises: the check cells of a notebook's "Try this" compare a student's code with labkit.

An exercise is a solution cell (nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers; the student
edition replaces the region by ``raise NotImplementedError()``) followed by a locked check cell calling
:func:`check`. The check turns every way of being unfinished or wrong into one readable message:

>>> check("Exercise 1: the SAM ascent step", lambda: my_ascent(w, g, rho=0.05), expected=ascent(w, g, 0.05))

An unsolved exercise raises :class:`ExerciseNotDone`; a wrong answer raises :class:`ExerciseIncorrect` with the
largest difference and the hint. Both are ``AssertionError`` s, so nbgrader's autograder counts them as failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


class ExerciseNotDone(AssertionError):
    """The student's code still raises ``NotImplementedError`` (the scaffold of the student edition)."""


class ExerciseIncorrect(AssertionError):
    """The student's answer does not match labkit's."""


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), dtype=torch.float64)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, torch.Tensor)) for v in value):
        try:
            return torch.as_tensor([float(v) for v in value], dtype=torch.float64)
        except (TypeError, ValueError):
            return None
    return None


def compare(answer: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6) -> str | None:
    """None when ``answer`` matches ``expected`` (tensors and numbers within tolerance, anything else by
    equality); otherwise a sentence saying how they differ."""
    got, want = _as_tensor(answer), _as_tensor(expected)
    if want is None:
        return None if answer == expected else f"expected {expected!r}, got {answer!r}"
    if got is None:
        return f"expected a tensor or number like labkit's, got {type(answer).__name__}"
    if got.shape != want.shape:
        return f"expected shape {tuple(want.shape)}, got shape {tuple(got.shape)}"
    got, want = got.to(torch.float64).cpu(), want.to(torch.float64).cpu()
    if not torch.isfinite(got).all():
        return "the answer contains NaN or inf"
    diff = (got - want).abs()
    bound = atol + rtol * want.abs()
    if bool((diff <= bound).all()):
        return None
    worst = float(diff.max())
    scale = float(want.abs().max())
    return f"largest difference {worst:.3g} (labkit's values reach {scale:.3g}; allowed {atol:g} + {rtol:g}·|labkit|)"


def check(name: str, answer: Callable[[], Any], *, expected: Any = None,
          test: Callable[[Any], str | None] | None = None, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str = "") -> Any:
    """Run the student's code (``answer``, a zero-argument callable) and compare it with ``expected``, or judge
    it with ``test`` (a function returning None when right, else what is wrong). Returns the answer.

    Raises :class:`ExerciseNotDone` while the scaffold still raises ``NotImplementedError`` and
    :class:`ExerciseIncorrect` naming the exercise, what differs and ``hint`` when the answer is wrong.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must name the exercise, e.g. 'Exercise 1: integrated gradients by hand'")
    if not callable(answer):
        raise TypeError("answer must be a zero-argument callable running the student's code, e.g. lambda: f(x)")
    for label, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"{label} must be a finite non-negative number, got {tol!r}")
    try:
        value = answer()
    except NotImplementedError:
        raise ExerciseNotDone(f"{name} is not solved yet: write your code where it says 'YOUR CODE HERE' and "
                              "delete the line 'raise NotImplementedError()'.") from None
    problem = test(value) if test is not None else compare(value, expected, rtol=rtol, atol=atol)
    if problem:
        raise ExerciseIncorrect(f"{name}: not yet right: {problem}." + (f" Hint: {hint}" if hint else ""))
    print(f"{name}: correct.")
    return value
