"""The concept study on real foundation-model features: EfficientNet-Lite0 on Fashion-MNIST.

    python benchmarks/sae_fmnist.py                 # the figures in the README (64 px)
    python benchmarks/sae_fmnist.py --resolution 64 --limit 2000 --quick  # a smoke run

1. `tttlab embed`: all 70,000 images (50k train, 10k val, 10k test; resumable) -> 1280-d
   unit-norm features at `--resolution` px.
2. `tttlab ttt --features ... --model linear`: global linear head, TTT and majority vote on the
   whole test set.
3. `tttlab sae train`: a top-k SAE, expansion 8 (10,240 latents), k = 16, on the training rows.
4. `tttlab sae analyse`: the three analyses on `--points` seeded test points, k = 50.
Then the headline numbers beside the paper's (CLIP ViT-B/16 on ImageNet). Every step is cached
under `--out`, so a rerun reports at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.encoders import efficientnet_lite0, embed, mnist_source
from tttlab.pipeline import run
from tttlab.sae import SaeConfig, SaeTrainConfig
from tttlab.sae.config import AnalyseConfig
from tttlab.sae.report import PAPER
from tttlab.sae.runs import analyse_run, train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="images per split (default all)")
    parser.add_argument("--out", default="runs/sae-fmnist")
    parser.add_argument("--epochs", type=int, default=10, help="SAE epochs")
    parser.add_argument("--batch", type=int, default=1024, help="SAE batch")
    parser.add_argument("--points", type=int, default=1000, help="test points analysed")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few epochs, points")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.points = 2, 50
    out = Path(args.out)
    suffix = "" if args.limit is None else f"-limit{args.limit}"
    feats = out / f"features-lite0-{args.resolution}{suffix}"
    t0 = time.perf_counter()
    source = mnist_source("fashion-mnist", limit=args.limit)
    embed(source, efficientnet_lite0(args.resolution), feats, batch_size=64)
    print(f"features: {feats} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    cfg = Config(
        data=DataConfig(
            features=str(feats / "train"),
            val_features=str(feats / "val"),
            test_features=str(feats / "test"),
        ),
        model=ModelConfig(model="linear"),
        run=RunConfig(out=str(out), name="fmnist-lite0", progress=False),
    )
    result = run(cfg)
    print(f"{result.table}\n({time.perf_counter() - t0:.0f} s) {result.run_dir}")

    t0 = time.perf_counter()
    sae_cfg = SaeConfig(d_in=1280, expansion_factor=8, k=16)
    train = SaeTrainConfig(
        epochs=args.epochs, batch_size=args.batch, lr_warmup_steps=100, k_warmup_steps=10000
    )  # capped at half the run: ends at k = 16
    folder, _ = train_run(feats / "train", sae_cfg, train, out, progress=True)
    m = json.loads((folder / "metrics.json").read_text())
    final = m["final"]
    print(
        f"SAE: FVU {final['fvu']:.4f}, dead {100 * final['dead_fraction']:.2f}%, "
        f"{m['samples_per_s']:.0f} rows/s ({time.perf_counter() - t0:.0f} s) {folder}"
    )

    t0 = time.perf_counter()
    acfg = AnalyseConfig(points=args.points, k=50)
    afolder, _ = analyse_run(folder, feats / "train", feats / "test", acfg, out, progress=True)
    a = json.loads((afolder / "metrics.json").read_text())
    print(f"analyses ({time.perf_counter() - t0:.0f} s): {afolder}")
    acc = a["accuracy"]
    rows = [
        ("dead latents", f"{100 * final['dead_fraction']:.2f}%", PAPER["dead latents"]),
        ("SAE FVU (all training rows)", f"{final['fvu']:.4f}", "not reported"),
        (
            "distinct concepts per 50-neighbourhood",
            f"{a['sparsity']['distinct_neighbourhood_mean']:.1f} (random 50: "
            f"{a['sparsity']['distinct_random_mean']:.1f})",
            PAPER["distinct concepts per 50-neighbourhood"],
        ),
        (
            "concepts kept by the learned mask",
            f"{a['sparsity']['learned_mask_size_mean']:.1f}, TTT "
            f"{100 * acc['ttt_codes_learned']:.2f}% vs all {100 * acc['ttt_codes_all']:.2f}%",
            PAPER["concepts kept by the learned mask"],
        ),
        (
            "only the test point's own concepts",
            f"{100 * acc['ttt_codes_own']:.2f}%",
            PAPER["only the test point's own 16 concepts"],
        ),
        (
            "agreement dense (recon) vs masked (codes) TTT",
            f"{100 * a['selection']['agreement_dense_recon_vs_masked_codes']:.1f}%",
            PAPER["agreement dense (reconstructions) vs masked (concepts) TTT"],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'quantity':<{width}}  {'here (Lite0, Fashion-MNIST)':<40}  paper (CLIP, ImageNet)")
    for name, here, paper in rows:
        print(f"{name:<{width}}  {here:<40}  {paper}")
    print("\naccuracy on the analysed test points:")
    for method, value in acc.items():
        print(f"  {method:<22} {100 * value:.2f}%")


if __name__ == "__main__":
    main()
