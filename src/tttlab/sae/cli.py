"""`tttlab sae train` and `tttlab sae analyse` once their flags have parsed (`tttlab.cli`)."""

from __future__ import annotations

import json
from typing import Any

from tttlab.atomic import Interrupted
from tttlab.sae.runs import analyse_run, train_run


def train(parsed: dict[str, Any]) -> int:
    """`tttlab sae train`: an SAE run folder, and its final metrics."""
    run_cfg = parsed["input"]
    try:
        folder, existed = train_run(
            run_cfg.features, parsed["sae"], parsed["train"], run_cfg.out, "sae",
            run_cfg.normalize, progress=run_cfg.progress,
        )  # fmt: skip
    except KeyboardInterrupt as err:
        raise Interrupted(
            "interrupted; no SAE folder was written (training keeps no checkpoint): the same "
            "command trains it again from the first epoch"
        ) from err
    if existed:
        print(f"(already trained with these settings: reporting {folder})")
    final = json.loads((folder / "metrics.json").read_text())["final"]
    print(
        f"FVU {final['fvu']:.4f}  MSE {final['mse']:.3g}  dead latents "
        f"{100 * final['dead_fraction']:.2f}%  active per row {final['mean_active']:.2f}"
    )
    print(f"results: {folder}")
    print(f"next: tttlab sae analyse --sae {folder} --features {run_cfg.features}")
    return 0


def analyse(parsed: dict[str, Any]) -> int:
    """`tttlab sae analyse`: the three concept analyses' run folder and report."""
    run_cfg, sae = parsed["input"], parsed["sae"]
    try:
        folder, existed = analyse_run(
            sae.sae, run_cfg.features, sae.test_features, parsed["analyse"], run_cfg.out,
            run_cfg.normalize, sae.test_per_class, progress=run_cfg.progress,
        )  # fmt: skip
    except KeyboardInterrupt as err:
        raise Interrupted(
            "interrupted; no analysis folder was written (the analyses keep no partial results): "
            "the same command runs them again from the start"
        ) from err
    if existed:
        print(f"(already analysed with these settings: reporting {folder})")
    print((folder / "report.md").read_text(encoding="utf-8").split("## Settings")[0].strip())
    print(f"results: {folder}")
    return 0
