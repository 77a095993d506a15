"""SAE run folders: `tttlab sae train` and `tttlab sae analyse` write one each, atomically.

    folder = train_run("fmnist/train", sae_cfg, train_cfg, out="runs")   # runs/sae-<key>/
    sae = SparseCoder.load(folder)

A folder is named `<name>-<key of its settings>` (`tttlab.keys.folder_name`), built as a hidden
temp folder and renamed into place when complete, so an interrupted run leaves nothing; the same
settings again report the existing folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tttlab.atomic import dumps_json
from tttlab.data.features import read_features
from tttlab.keys import folder_name, settings_digest
from tttlab.results import figure, save_figure, write_folder, write_report, write_rows_csv
from tttlab.sae.config import PAPER_DEFECTS, SaeConfig, SaeTrainConfig
from tttlab.sae.model import SparseCoder
from tttlab.sae.trainer import evaluate, train_sae
from tttlab.tensors import check_device

SETTINGS_FILE = "settings.json"
METRICS_FILE = "metrics.json"


def write_sae_folder(out: Path, name: str, settings: dict, write) -> tuple[Path, bool]:
    """`<out>/<name>-<key of settings>` holding settings.json and what `write(tmp)` puts there,
    written by `results.write_folder`: (the folder, True) if it exists already (`write` is not
    called), else (it, False)."""

    def fill(tmp: Path) -> None:
        (tmp / SETTINGS_FILE).write_text(dumps_json(settings), encoding="utf-8")
        write(tmp)

    folder = folder_name(name, settings_digest(settings))
    return write_folder(out, name, fill, folder=folder, complete=(SETTINGS_FILE, METRICS_FILE))


def train_run(
    features: str | Path,
    cfg: SaeConfig,
    train: SaeTrainConfig,
    out: str | Path = "runs",
    name: str = "sae",
    normalize: bool = False,
    progress: bool = True,
) -> tuple[Path, bool]:
    """Train an SAE on a feature file (cfg.d_in is taken from it) and write its run folder:
    cfg.json + sae.safetensors, settings.json, history.csv (per epoch), metrics.json (the
    last epoch and an eval-mode pass over all rows), training.png and report.md.
    Returns (folder, whether it already existed)."""
    check_device(train.device, "--device")
    X, _ = read_features(features, normalize)
    try:
        cfg = dataclasses.replace(cfg, d_in=X.shape[1])
    except ValueError as err:
        raise ValueError(f"{features} has features of width d={X.shape[1]}: {err}") from err
    settings = {
        "features": str(Path(features).expanduser().resolve()),
        "rows": int(X.shape[0]),
        "normalize": normalize,
        "sae": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(train),
    }

    def write(tmp: Path) -> None:
        sae, history = train_sae(X, cfg, train, progress=progress, where=str(features))
        sae.save(tmp)
        final = evaluate(sae, X, str(features))
        samples = sum(h["samples_per_s"] * h["seconds"] for h in history)
        metrics = {
            "final": final,
            "last_epoch": history[-1],
            "train_seconds": sum(h["seconds"] for h in history),
            "samples_per_s": samples / sum(h["seconds"] for h in history),
        }
        (tmp / METRICS_FILE).write_text(dumps_json(metrics), encoding="utf-8")
        write_rows_csv(tmp / "history.csv", history)
        plot_history(history, tmp / "training.png")
        summary = (
            f"Top-k SAE, {cfg.d_in} -> {cfg.latents} latents, k = {cfg.k}, trained on "
            f"{X.shape[0]} rows of `{features}` for {train.epochs} epochs "
            f"({'sparse' if train.sparse else 'dense'} path, {metrics['samples_per_s']:.0f} "
            f"rows/s). Over all rows in eval mode: FVU {final['fvu']:.4f}, MSE "
            f"{final['mse']:.3g}, {100 * final['dead_fraction']:.2f}% dead latents, "
            f"{final['mean_active']:.2f} active latents per row.\n\nNot copied from the paper: "
            f"{PAPER_DEFECTS}"
        )
        write_report(
            tmp / "report.md",
            title="Sparse autoencoder training",
            summary=summary,
            table_rows=history,
            columns=["epoch", "k", "lr", "mse", "fvu", "dead_fraction", "mean_active", "auxk"],
            plot=tmp / "training.png",
            settings=settings,
        )

    return write_sae_folder(Path(out).expanduser(), name, settings, write)


def plot_history(history: list[dict], path: Path) -> Path:
    """FVU, dead fraction and active latents per epoch, three panels, PNG (atomic)."""
    fig = figure((11, 3.4))
    epochs = [h["epoch"] for h in history]
    panels = [("fvu", "FVU"), ("dead_fraction", "dead latents (fraction)"), ("mean_active", "")]
    for i, (key, label) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 3, i)
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3)
        if key == "mean_active":
            ax.plot(epochs, [h["k"] for h in history], ls="--", label="k")
            ax.legend()
            label = "active latents per row"
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("SAE training (over each epoch's training batches)", fontsize=11)
    return save_figure(fig, path, dpi=120)


def load_sae(path: str | Path, device: str = "cpu") -> SparseCoder:
    """A tttlab SAE folder (cfg.json + sae.safetensors) or the paper's .pt checkpoint."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return SparseCoder.load_paper(path, device)
    return SparseCoder.load(path, device)
