"""How long a run will take on this machine, estimated before any work, to warn about a study
unit that would run for hours.

The estimate counts the floating-point work of each stage (training the global model, its
features, the neighbour search, TTT and the experts' fine-tuning) plus a fixed cost per training
step (small models are bound by it, not by their FLOPs), and divides by the rate of a short
matrix-multiply probe at the threads this process computes with. It is meant to be right within a
few times, which is what telling minutes from hours needs.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass

import torch

from tttlab.config import Config
from tttlab.methods.registry import METHODS
from tttlab.models.shapes import cnn_shape, scale_for_width
from tttlab.threads import compute_threads

STEP_SECONDS = 2e-3
"""Fixed cost of one training step (data, autograd, optimiser), whatever the model's size."""
EFFICIENCY = 0.5
"""Share of the probe's matmul rate that training and TTT reach (small matmuls, convolutions)."""


@dataclass(frozen=True)
class Sizes:
    """The rows a run works on."""

    n_train: int
    n_val: int
    n_test: int
    d_in: int
    classes: int


def cnn_forward_flops(width: int, image_size: int = 28, classes: int = 10) -> float:
    """Multiply-adds x 2 of one image through the CNN of feature width `width`."""
    s = cnn_shape(scale_for_width(width), image_size)
    side1 = image_size - s.kernel1 + 1
    side2 = side1 // 2 - s.kernel2 + 1
    conv1 = side1**2 * s.channels1 * s.kernel1**2
    conv2 = side2**2 * s.channels1 * s.channels2 * s.kernel2**2
    return 2.0 * (conv1 + conv2 + s.feature_width * classes)


def feature_width(cfg: Config, d_in: int) -> int:
    """d, the width of the features TTT tunes a head on."""
    m = cfg.model
    return {"cnn": m.width, "mlp": m.hidden}.get(m.model, d_in)


def run_work(cfg: Config, n: Sizes) -> tuple[float, int]:
    """(floating-point operations, training steps) of `cfg`'s run on `n` rows."""
    m, d, C = cfg.model, feature_width(cfg, n.d_in), n.classes
    if m.model == "cnn":
        forward = cnn_forward_flops(m.width, classes=C)
    elif m.model == "mlp":
        forward = 2.0 * (n.d_in * m.hidden + m.hidden * C)
    else:
        forward = 2.0 * n.d_in * C
    trained = m.checkpoint is None
    epochs = cfg.train.epochs if trained else 0
    steps = epochs * math.ceil(n.n_train / cfg.train.batch_size)
    flops = 3 * forward * n.n_train * epochs + forward * (n.n_val * epochs)  # train + validate
    flops += forward * (n.n_train + n.n_val + n.n_test)  # the features of every split
    k = max(METHODS[name].needs_k(cfg) for name in cfg.methods.methods)
    flops += 2.0 * n.n_test * n.n_train * d if k else 0  # exact search
    per_step = 6.0 * d * C  # forward, and backward to the head's weights, per neighbour
    if "ttt" in cfg.methods.methods:
        t = cfg.ttt
        flops += n.n_test * t.epochs * (t.k * per_step + 10.0 * d * C)  # and Adam
    if "experts" in cfg.methods.methods:
        e, x = cfg.experts, cfg.experts_ttt
        flops += e.n_experts * x.epochs * x.k * per_step
        flops += 2.0 * n.n_train * e.n_experts * d * e.kmeans_iter  # k-means
    return flops, steps


@functools.cache
def probe_flops(threads: int, seconds: float = 0.15) -> float:
    """Floating-point operations per second of a float32 matmul here, at `threads` threads."""
    a = torch.randn(512, 512)
    with compute_threads(threads):
        a @ a  # the first call sets the thread pool up; it is not timed
        start, reps = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - start) < seconds or reps < 3:
            a @ a
            reps += 1
    return 2.0 * 512**3 * reps / elapsed


def run_seconds(cfg: Config, n: Sizes, rate: float | None = None) -> float:
    """The estimated wall time of `cfg`'s run on `n` rows here (rate: the probe's, by default)."""
    flops, steps = run_work(cfg, n)
    rate = rate if rate is not None else probe_flops(torch.get_num_threads())
    return flops / (EFFICIENCY * rate) + steps * STEP_SECONDS


HOUR = 3600.0


def warn_long_units(estimates: dict[str, float], rate: float, threads: int) -> None:
    """Warn, with the fixes, when a study's costliest unit would run for more than an hour here
    (`estimates`: unit id -> estimated seconds)."""
    if not estimates:
        return
    unit, seconds = max(estimates.items(), key=lambda item: item[1])
    if seconds <= HOUR:
        return
    warnings.warn(
        f"unit {unit} needs about {seconds / HOUR:.1f} hours on this machine (an estimate from "
        f"its work and a {rate / 1e9:.0f} GFLOP/s matmul probe at {threads} threads): run the "
        "units elsewhere (--executor slurm, or --workers on a larger machine), make them smaller "
        "(--limit, fewer --train.epochs or --ttt.epochs), or try --preset quick first",
        stacklevel=3,
    )
