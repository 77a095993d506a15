"""`tttlab sae train` and `tttlab sae analyse`; flags generated from the config dataclasses.

tttlab sae train --features fmnist/train --epochs 20 --batch-size 1024      # runs/sae-<key>/
tttlab sae train --features clip/ --preset paper                            # the paper's recipe
tttlab sae analyse --sae runs/sae-<key> --features fmnist/train --test-features fmnist/test
"""

from __future__ import annotations

import argparse

import simple_parsing

from tttlab.sae.config import AnalyseConfig, SaeConfig, SaeTrainConfig, paper_configs

HELP = {
    "train": "train a top-k sparse autoencoder on a feature file; writes a run folder",
    "analyse": "the paper's three concept analyses of an SAE on a feature file",
}


def _parser(command: str, description: str) -> simple_parsing.ArgumentParser:
    from tttlab.cli import flag_parser  # tttlab.cli imports this module only when asked

    return flag_parser(f"tttlab sae {command}", description)


def _common(parser: argparse.ArgumentParser) -> None:
    features_help = "feature file or folder of chunks (embeddings + labels)"
    parser.add_argument("--features", required=True, metavar="PATH", help=features_help)
    normalize_help = "unit-normalise every row first (the paper's CLIP features are unit-norm)"
    parser.add_argument("--normalize", action="store_true", help=normalize_help)
    parser.add_argument("--out", default="runs", help="folder that receives the run folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def train_main(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.preset not in (None, "paper"):
        raise ValueError(f"--preset {known.preset!r} is unknown; the shipped preset is 'paper'")
    sae_cfg, train_cfg = paper_configs() if known.preset else (SaeConfig(), SaeTrainConfig())
    parser = _parser("train", HELP["train"])
    _common(parser)
    parser.add_argument("--name", default="sae", help="run folder name prefix")
    parser.add_argument("--preset", default=None, choices=["paper"],
                        help="start from the paper's recipe (expansion 8, k 16, batch 4096, "
                        "k warm-up 128 -> 16 over 10,000 steps); flags override it")  # fmt: skip
    parser.add_arguments(SaeConfig, dest="sae", default=sae_cfg)
    parser.add_arguments(SaeTrainConfig, dest="train", default=train_cfg)
    args = parser.parse_args(argv)
    from tttlab.sae.runs import train_run

    folder, existed = train_run(
        args.features, args.sae, args.train, args.out, args.name, args.normalize,
        progress=not args.no_progress,
    )  # fmt: skip
    if existed:
        print(f"(already trained with these settings: reporting {folder})")
    _print_metrics(folder)
    print(f"results: {folder}")
    return 0


def _print_metrics(folder) -> None:
    import json

    final = json.loads((folder / "metrics.json").read_text())["final"]
    print(
        f"FVU {final['fvu']:.4f}  MSE {final['mse']:.3g}  dead latents "
        f"{100 * final['dead_fraction']:.2f}%  active per row {final['mean_active']:.2f}"
    )


def analyse_main(argv: list[str]) -> int:
    """`tttlab sae analyse --sae RUN --features POOL [--test-features TEST] [flags]`."""
    parser = _parser("analyse", "the paper's three concept analyses of an SAE")
    _common(parser)
    parser.add_argument(
        "--sae",
        required=True,
        metavar="PATH",
        help="an SAE folder (tttlab sae train) or the paper's .pt checkpoint",
    )
    parser.add_argument(
        "--test-features",
        default=None,
        metavar="PATH",
        help="test file; default: carve --test-per-class rows per class out",
    )
    parser.add_argument("--test-per-class", type=int, default=50, help="see --test-features")
    parser.add_arguments(AnalyseConfig, dest="cfg")
    args = parser.parse_args(argv)
    from tttlab.sae.runs import analyse_run

    folder, existed = analyse_run(
        args.sae,
        args.features,
        args.test_features,
        args.cfg,
        args.out,
        args.normalize,
        args.test_per_class,
        progress=not args.no_progress,
    )
    if existed:
        print(f"(already analysed with these settings: reporting {folder})")
    print((folder / "report.md").read_text(encoding="utf-8").split("## Settings")[0].strip())
    print(f"results: {folder}")
    return 0


def main(argv: list[str]) -> int:
    """`tttlab sae {train,analyse} ...`."""
    if not argv or argv[0] not in HELP:
        lines = "\n".join(f"  {name:<8} {text}" for name, text in HELP.items())
        print(f"usage: tttlab sae {{{','.join(HELP)}}} ...\n\n{lines}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "train":
        return train_main(argv[1:])
    return analyse_main(argv[1:])
