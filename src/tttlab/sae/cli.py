"""`tttlab sae train` and `tttlab sae analyse` once their flags have parsed (`tttlab.cli`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tttlab.atomic import Interrupted
from tttlab.files import need, read_json_object
from tttlab.sae.runs import analyse_run, train_run
from tttlab.threads import compute_threads, policy_threads


@contextmanager
def _nothing_kept(what: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: say truly that nothing was kept (the folder is written whole at the end,
    and no stage of an SAE run is cached)."""
    try:
        yield
    except KeyboardInterrupt as err:
        raise Interrupted(
            f"interrupted; no {what} folder was written (it is written whole at the end) and "
            "nothing else was kept: the same command starts over"
        ) from err


def train(parsed: dict[str, Any]) -> int:
    """`tttlab sae train`: an SAE run folder, and its final metrics."""
    run_cfg = parsed["input"]
    with compute_threads(policy_threads().threads), _nothing_kept("SAE"):
        folder, existed = train_run(
            run_cfg.features, parsed["sae"], parsed["train"], run_cfg.out, "sae",
            run_cfg.normalize, progress=run_cfg.progress,
        )  # fmt: skip
    if existed:
        print(f"(already trained with these settings: reporting {folder})")
    path, fix = folder / "metrics.json", f"delete {folder} and train again"
    final = need(read_json_object(path, "an SAE run's metrics", fix), "final", dict, path, fix)
    for name in ("fvu", "mse", "dead_fraction", "mean_active"):
        need(final, name, (int, float), path, fix, "final")
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
    with compute_threads(policy_threads().threads), _nothing_kept("analysis"):
        folder, existed = analyse_run(
            sae.sae, run_cfg.features, sae.test_features, parsed["analyse"], run_cfg.out,
            run_cfg.normalize, sae.test_per_class, progress=run_cfg.progress,
        )  # fmt: skip
    if existed:
        print(f"(already analysed with these settings: reporting {folder})")
    print((folder / "report.md").read_text(encoding="utf-8").split("## Settings")[0].strip())
    print(f"results: {folder}")
    return 0
