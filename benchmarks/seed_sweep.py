"""A model-seed sweep on the fixed split: global and TTT per seed with both error bars, beside the
old protocol in which the seed also moved the train/validation split.

    python benchmarks/seed_sweep.py                       # Fashion-MNIST, d = 25 CNN, seeds 0 1 2
    python benchmarks/seed_sweep.py --test-limit 2000     # TTT on 2,000 test points

Every run trains the demo's d = 25 CNN (10 epochs) and runs TTT with the defaults. "fixed split"
is split_seed 0 (the authors' split; their seed1/seed2 checkpoints share it) with the model seed
varied; "split moves" is split_seed = seed, as tttlab's --seed did before the two were separate.
Each cell shows accuracy ± the binomial standard error [bootstrap 95% CI]; the last row per
protocol is the mean over seeds and the spread (max - min) between them.
"""

from __future__ import annotations

import argparse

import numpy as np
from protocol_flags import add_flags, results_folder

from tttlab.config import Config, DataConfig, RunConfig
from tttlab.pipeline import evaluate, stages


def cell(a: dict) -> str:
    return (
        f"{100 * a['accuracy']:.2f} ± {100 * a['se']:.2f} "
        f"[{100 * a['ci_low']:.2f}, {100 * a['ci_high']:.2f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_flags(parser)
    args = parser.parse_args()
    with results_folder(args) as out:
        data = DataConfig(dataset="fashion-mnist", test_limit=args.test_limit)
        train_of = {}
        for protocol in ("fixed split", "split moves"):
            print(f"\n{protocol}: seed  {'global':<26} {'ttt':<26} gain")
            accs = {"global": [], "ttt": [], "gain": []}
            for seed in args.seeds:
                split_seed = 0 if protocol == "fixed split" else seed
                run = RunConfig(seed=seed, split_seed=split_seed, out=str(out), progress=False)
                cfg = Config(data=data, run=run)
                m = evaluate(cfg).metrics
                train_of[protocol, seed] = stages.load_data(cfg).train_idx
                g, t = m["methods"]["global"], m["methods"]["ttt"]
                gain = m["gain_over_global"]["ttt"]["mean"]
                for name, value in (("global", g["accuracy"]), ("ttt", t["accuracy"])):
                    accs[name].append(value)
                accs["gain"].append(gain)
                print(f"{'':>{len(protocol)}}  {seed:>4}  {cell(g):<26} {cell(t):<26} "
                      f"{100 * gain:+.2f}")  # fmt: skip
            mean = {k: 100 * np.mean(v) for k, v in accs.items()}
            spread = {k: 100 * (max(v) - min(v)) for k, v in accs.items()}
            pad = " " * len(protocol)
            print(f"{pad}  mean  {mean['global']:.2f} (spread {spread['global']:.2f})"
                  f"{'':<6} {mean['ttt']:.2f} (spread {spread['ttt']:.2f}){'':<6} "
                  f"{mean['gain']:+.2f} (spread {spread['gain']:.2f})")  # fmt: skip
        base = set(train_of["fixed split", args.seeds[0]].tolist())
        for seed in args.seeds[1:]:
            moved = len(base - set(train_of["split moves", seed].tolist()))
            kept = len(base - set(train_of["fixed split", seed].tolist()))
            print(f"seed {seed}: training images swapped out vs seed {args.seeds[0]}: "
                  f"{moved} when the split moves, {kept} on the fixed split")  # fmt: skip


if __name__ == "__main__":
    main()
