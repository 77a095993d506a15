"""Wall time of a run, then of a run changing only TTT's k and lr (same process, fresh cache).

The second run must reuse the trained model, the features and (k smaller) the neighbours, and pay
only for the methods whose settings changed. Prints both wall times and what each stage reused.

    python benchmarks/pipeline_reuse.py            # the demo's setting: Fashion-MNIST, d = 25 CNN
    python benchmarks/pipeline_reuse.py --quick    # digits and a linear head, seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and a linear head")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        base = Config(run=RunConfig(out=out, progress=False))
        if args.quick:
            base = replace(
                base, data=DataConfig(dataset="digits"), model=ModelConfig(model="linear")
            )
        second = replace(base, ttt=replace(base.ttt, k=base.ttt.k // 2, lr=2 * base.ttt.lr))
        rows = []
        for label, cfg in (("first run", base), ("k and lr changed", second)):
            start = time.perf_counter()
            result = run(cfg)
            wall = time.perf_counter() - start
            acc = result.metrics["methods"]["ttt"]["accuracy"]
            reused = ", ".join(f"{s}={'yes' if r else 'no'}" for s, r in result.reused.items())
            rows.append((label, cfg.ttt.k, cfg.ttt.lr, wall, acc, reused))
    print(f"{base.data.dataset}, {base.model.model}; the second run reuses what it can")
    print(f"{'run':<18} {'k':>4} {'lr':>6} {'wall s':>8} {'ttt acc':>8}  stages reused")
    for label, k, lr, wall, acc, reused in rows:
        print(f"{label:<18} {k:>4} {lr:>6} {wall:>8.2f} {100 * acc:>7.2f}%  {reused}")
    print(f"second / first wall time: {rows[1][3] / rows[0][3]:.2f}")


if __name__ == "__main__":
    main()
