"""Flags the protocol benchmarks share (converged_baseline, seed_sweep, kmeans_restarts,
dataset_size_protocols): how many test points, torch's threads, and where runs and cache go."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def add_flags(parser: argparse.ArgumentParser) -> None:
    """--test-limit, --threads and --out."""
    parser.add_argument("--test-limit", type=int, default=None, help="score this many points")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", default=None, help="keep runs and cache here (default: temp)")


@contextmanager
def results_folder(args: argparse.Namespace) -> Iterator[Path]:
    """Set torch's threads, print the machine's torch, and yield --out (or a temp folder)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        yield out
