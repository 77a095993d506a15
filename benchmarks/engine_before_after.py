"""The TTT engine before and after the input-check / determinism / public-Adam change, in one run.

    PYTHONPATH=src python benchmarks/engine_before_after.py          # ttt_speed.py's settings
    PYTHONPATH=src python benchmarks/engine_before_after.py --quick  # fewer points, no CNN

"Before" is src/tttlab/ttt/engine.py as it was at git revision 9602e5d, loaded from `git show`
into a temporary module; "after" is the working tree's. Both run at their own automatic chunk
size, interleaved, median and best of 5 each (this machine's speed swings between runs, so only
figures from one run compare). Prints points/s of both, their ratio, and how far their logits
are apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from ttt_speed import clip_head_problem, small_head_problem

from tttlab.retrieval import KNNIndex
from tttlab.ttt import engine as after

BEFORE_REV = "9602e5d"


def load_before(rev: str = BEFORE_REV) -> ModuleType:
    """engine.py at git revision `rev`, imported as a standalone module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{rev}:src/tttlab/ttt/engine.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "engine_before.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("engine_before", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["engine_before"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return module


def run(engine: ModuleType, head, pool_x, pool_y, query_x, nbr, settings: dict) -> torch.Tensor:
    """ttt_logits of one engine version, with its own TTTConfig and automatic chunk size."""
    cfg = engine.TTTConfig(**settings)
    return engine.ttt_logits(head.weight, head.bias, pool_x, pool_y, query_x, nbr, cfg)


def compare(name: str, problem, settings: dict, before: ModuleType, repeats: int = 5) -> None:
    """Print points/s before and after (median and best of `repeats`, interleaved, so both see
    the same swings of this machine's speed) and how far their logits are apart."""
    head, pool_x, pool_y, query_x = problem
    _, nbr = KNNIndex().fit(pool_x).search(query_x, settings["k"])
    nbr = torch.from_numpy(nbr)
    D, C, B = pool_x.shape[1], head.out_features, len(query_x)
    chunks = [m.auto_chunk_size(settings["k"], D, C) for m in (before, after)]
    print(f"\n== {name}: d={D}, classes={C}, {settings}, {B} test points, chunks {chunks}")
    for m in (before, after):  # warm-up
        run(m, head, pool_x, pool_y, query_x[:4], nbr[:4], settings)
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    logits = {}
    for _ in range(repeats):
        for label, m in (("before", before), ("after", after)):
            t = time.perf_counter()
            logits[label] = run(m, head, pool_x, pool_y, query_x, nbr, settings)
            seconds[label].append(time.perf_counter() - t)
    median = {label: B / statistics.median(s) for label, s in seconds.items()}
    best = {label: B / min(s) for label, s in seconds.items()}
    diff = (logits["after"] - logits["before"]).abs().max().item()
    same = (logits["after"].argmax(1) == logits["before"].argmax(1)).float().mean().item()
    for what, rate in (("median", median), ("best", best)):
        print(
            f"{what:>6}: before {rate['before']:9.1f} pts/s   after {rate['after']:9.1f} pts/s"
            f"   after/before {rate['after'] / rate['before']:.3f}"
        )
    print(
        f"logits: bit-identical {torch.equal(logits['after'], logits['before'])}, largest "
        f"difference {diff:.2e}, same prediction on {100 * same:.2f}% of points"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer points; synthetic small-head features"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each version")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    before = load_before()
    if args.quick:
        g = torch.Generator().manual_seed(0)
        pool_x = torch.randn(50_000, 25, generator=g)
        pool_y = (pool_x @ torch.randn(25, 10, generator=g)).argmax(1)
        small = (torch.nn.Linear(25, 10), pool_x, pool_y, torch.randn(300, 25, generator=g))
    else:
        small = small_head_problem(2000)
    compare("small head", small, dict(k=200, epochs=50, lr=0.05), before, args.repeats)
    head, pool_x, pool_y, query_x = small
    seq = (head, pool_x, pool_y, query_x[: 100 if args.quick else 500])
    sequential = dict(k=50, epochs=2, lr=0.05, method="sequential")
    compare("small head, sequential", seq, sequential, before, args.repeats)
    clip = clip_head_problem(16 if args.quick else 100)
    compare("CLIP-sized head", clip, dict(k=50), before, args.repeats)


if __name__ == "__main__":
    main()
