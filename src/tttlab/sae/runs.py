"""SAE run folders: `tttlab sae train` and `tttlab sae analyse` write one each, atomically.

    folder = train_run("fmnist/train", sae_cfg, train_cfg, out="runs")   # runs/sae-<key>/
    sae = SparseCoder.load(folder)

A folder is named `<name>-<key of its settings>` (`tttlab.keys.folder_name`), built as a hidden
temp folder and renamed into place when complete, so an interrupted run leaves nothing; the same
settings again report the existing folder.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

from tttlab.atomic import dumps_json
from tttlab.data.features import carve_out, open_features, read_features
from tttlab.keys import content_digest, folder_name, settings_digest
from tttlab.memory import MemoryEstimate, available_bytes, check_memory
from tttlab.results import write_folder, write_rows_csv
from tttlab.sae.analyses import analyse
from tttlab.sae.config import AnalyseConfig, SaeConfig, SaeTrainConfig
from tttlab.sae.model import SparseCoder, check_width
from tttlab.sae.report import (
    plot_analyses,
    plot_history,
    write_analysis_report,
    write_training_report,
)
from tttlab.sae.trainer import EVAL_BATCH, evaluate, train_sae
from tttlab.tensors import check_device
from tttlab.threads import thread_record

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


def sae_memory(rows: int, d: int, latents: int, batch: int) -> MemoryEstimate:
    """The peak memory of training an SAE: the rows in memory, its weights with their gradients
    and Adam's two moments, a batch's pre-activations and the evaluation pass's."""
    parts = {
        "rows": rows * d * 4,
        "sae": 2 * latents * d * 4 * 4,
        "batches": (batch + EVAL_BATCH) * latents * 4 * 3,
    }
    return MemoryEstimate(parts, available_bytes(), "this SAE")


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
    chunks = open_features(features)  # sizes from the headers, before any row is read
    rows, d = sum(c.rows for c in chunks), chunks[0].dim
    need = sae_memory(rows, d, cfg.expansion_factor * d if not cfg.num_latents else cfg.num_latents,
                      min(train.batch_size, rows))  # fmt: skip
    if progress:
        print(f"tttlab: {need.describe()}", file=sys.stderr)
    check_memory(need, "Use fewer rows (a smaller feature file), fewer latents, a smaller "
                 "--batch-size, or a machine with more memory")  # fmt: skip
    X, _ = read_features(features, normalize)
    try:
        cfg = dataclasses.replace(cfg, d_in=X.shape[1])
    except ValueError as err:
        raise ValueError(f"{features} has features of width d={X.shape[1]}: {err}") from err
    warn_few_rows(len(X), cfg)
    settings = {
        "features": str(Path(features).expanduser().resolve()),
        "features_sha256": content_digest(features),
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
            "environment": thread_record(),
        }
        (tmp / METRICS_FILE).write_text(dumps_json(metrics), encoding="utf-8")
        write_rows_csv(tmp / "history.csv", history)
        plot_history(history, tmp / "training.png")
        write_training_report(
            tmp / "report.md", history, metrics, cfg, train, len(X), features, settings
        )

    return write_sae_folder(Path(out).expanduser(), name, settings, write)


ROWS_PER_LATENT = 5
"""Training rows per latent below which `train_run` warns that many latents will stay dead."""


def warn_few_rows(rows: int, cfg: SaeConfig) -> None:
    """Warn when an SAE has too many latents for its rows: most never fire, and stay dead."""
    if rows < ROWS_PER_LATENT * cfg.latents:
        fewer = max(1, rows // (ROWS_PER_LATENT * cfg.d_in))
        warnings.warn(
            f"{cfg.latents:,} latents on {rows:,} training rows ({rows / cfg.latents:.2g} rows per "
            f"latent): many latents will never fire and stay dead; give it more rows, or fewer "
            f"latents (--expansion-factor {fewer} or --num-latents {rows // ROWS_PER_LATENT})",
            stacklevel=3,
        )


def analyse_run(
    sae_path: str | Path,
    features: str | Path,
    test_features: str | Path | None,
    cfg: AnalyseConfig,
    out: str | Path = "runs",
    normalize: bool = False,
    test_per_class: int = 50,
    progress: bool = True,
) -> tuple[Path, bool]:
    """Load an SAE and the features, run `analyse`, write a run folder: metrics.json, the three
    tables and the accuracy table as CSV, analyses.png and report.md."""
    sae = load_sae(sae_path)
    X, y = read_features(features, normalize)
    check_width(sae, X.shape[1], str(features))
    if test_features is None:
        split = carve_out(y, {"test": test_per_class}, cfg.seed, features)
        pool, test = split["train"], split["test"]
        (pX, py), (tX, ty) = (X[pool], y[pool]), (X[test], y[test])
        names = (f"{features} (less the test carve-out)", f"{features} (test carve-out)")
    else:
        tX, ty = read_features(test_features, normalize)
        pX, py = X, y
        names = (str(features), str(test_features))
    settings = {
        "sae": str(Path(sae_path).expanduser().resolve()),
        "sae_sha256": content_digest(sae_path),
        "sae_config": dataclasses.asdict(sae.cfg),
        "features": str(Path(features).expanduser().resolve()),
        "features_sha256": content_digest(features),
        "test_features": None if test_features is None else str(Path(test_features).resolve()),
        "test_features_sha256": None if test_features is None else content_digest(test_features),
        "normalize": normalize,
        "analyse": dataclasses.asdict(cfg),
    }

    def write(tmp: Path) -> None:
        result = analyse(sae, pX, py, tX, ty, cfg, progress=progress, where=names)
        metrics = result.metrics | {"environment": thread_record()}
        (tmp / METRICS_FILE).write_text(dumps_json(metrics), encoding="utf-8")
        write_rows_csv(tmp / "accuracy.csv", result.accuracy)
        write_rows_csv(tmp / "similarity.csv", result.similarity)
        write_rows_csv(tmp / "sparsity.csv", result.sparsity)
        plot_analyses(result, tmp / "analyses.png")
        write_analysis_report(tmp / "report.md", result, settings)

    return write_sae_folder(Path(out).expanduser(), "sae-analyse", settings, write)


def load_sae(path: str | Path, device: str = "cpu") -> SparseCoder:
    """A tttlab SAE folder (cfg.json + sae.safetensors) or the paper's .pt checkpoint."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return SparseCoder.load_paper(path, device)
    return SparseCoder.load(path, device)
