"""Checks of settings shared by every config and entry point: each names the setting, the value it
got and what is allowed, so an error raised deep inside a run still says what to change.

Plain Python and numpy only: config modules import these, and the command line builds its parsers
without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class NonFiniteError(ArithmeticError):
    """A computation produced NaN or inf (fine-tuned weights, logits, a method's scores): the run
    stops rather than report them."""


def short(value: object, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters: a message never repeats a huge value."""
    if isinstance(value, str) and len(value) > limit:  # repr of a 1 GB string would copy it
        return f"{value[: limit - 30]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 25]}... ({len(text)} characters)"


# ---- settings: one check per kind of scalar, each naming the setting and what is allowed ----


def check_int(value: object, name: str, min: int | None = None) -> None:
    """An integer (not a bool, not a float) at least `min`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {short(value)} ({type(value).__name__})")
    if min is not None and value < min:
        raise ValueError(f"{name} must be an integer >= {min}, got {value}")


def check_number(
    value: object,
    name: str,
    min: float | None = None,
    max: float | None = None,
    strict_min: bool = False,
) -> None:
    """A finite real number (ints allowed, bools not) in [min, max], or (min, max] if strict_min."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {short(value)} ({type(value).__name__})")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    low_ok = min is None or (value > min if strict_min else value >= min)
    if not low_ok or (max is not None and value > max):
        lo = "" if min is None else f"{'>' if strict_min else '>='} {min}"
        hi = "" if max is None else f"<= {max}"
        raise ValueError(
            f"{name} must be a number {' and '.join(filter(None, [lo, hi]))}, got {value!r}"
        )


def check_choice(value: object, name: str, choices: tuple) -> None:
    """One of `choices`."""
    if value not in choices:
        raise ValueError(
            f"{name}={short(value)} is not supported; use one of {', '.join(map(str, choices))}"
        )


def check_fraction(fraction: float) -> None:
    """A share of the training set: a number in (0, 1]."""
    check_number(fraction, "fraction", min=0, max=1, strict_min=True)


DEVICES: tuple[str, ...] = ("cpu", "cuda")


def check_writable_dir(path: str | Path, what: str) -> None:
    """`path` is a folder we can write, or can be created as one (nothing is created here)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what}={short(str(path))} is a file, not a folder: pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}={str(path)!r}: {existing} is a file, so no folder can be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what}={str(path)!r}: {existing} is not writable: choose a folder you can write"
        )
