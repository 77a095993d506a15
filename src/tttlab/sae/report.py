"""What an SAE's run folders show: the training curves and report, the analyses' plot and report.

plot_history(history, folder / "training.png")
write_analysis_report(folder / "report.md", result, settings)
"""

from __future__ import annotations

from pathlib import Path

from tttlab.atomic import atomic_write_text, dumps_json
from tttlab.results import Estimate, figure, markdown_table, save_figure, write_report
from tttlab.sae.analyses import SPACES, AnalysisResult
from tttlab.sae.config import PAPER_DEFECTS, SaeConfig, SaeTrainConfig

PAPER = {
    "dead latents": "about 4%",
    "distinct concepts per 50-neighbourhood": "about 180",
    "concepts kept by the learned mask": "about 40, no accuracy loss (72.64%)",
    "only the test point's own 16 concepts": "71.51%",
    "agreement dense (reconstructions) vs masked (concepts) TTT": "about 89%",
}
"""The paper's values for the analyses (CLIP ViT-B/16 on ImageNet), quoted in every report."""


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


def write_training_report(
    path: Path,
    history: list[dict],
    metrics: dict,
    cfg: SaeConfig,
    train: SaeTrainConfig,
    rows: int,
    features: str | Path,
    settings: dict,
) -> Path:
    """The training run's report.md: the SAE, its final quality, each epoch, the curves
    (training.png beside it) and what is not copied from the paper."""
    final = metrics["final"]
    summary = (
        f"Top-k SAE, {cfg.d_in} -> {cfg.latents} latents, k = {cfg.k}, trained on "
        f"{rows} rows of `{features}` for {train.epochs} epochs "
        f"({'sparse' if train.sparse else 'dense'} path, {metrics['samples_per_s']:.0f} "
        f"rows/s). Over all rows in eval mode: FVU {final['fvu']:.4f}, MSE "
        f"{final['mse']:.3g}, {100 * final['dead_fraction']:.2f}% dead latents, "
        f"{final['mean_active']:.2f} active latents per row.\n\nNot copied from the paper: "
        f"{PAPER_DEFECTS}"
    )
    return write_report(
        path,
        title="Sparse autoencoder training",
        summary=summary,
        table_rows=history,
        columns=["epoch", "k", "lr", "mse", "fvu", "dead_fraction", "mean_active", "auxk"],
        plot=path.parent / "training.png",
        settings=settings,
    )


def plot_analyses(result: AnalysisResult, path: Path) -> Path:
    """Three panels: concept-space cosine of each space's neighbours; distinct concepts across a
    neighbourhood, random points and the learned mask; the dense/masked probability gap."""
    a = result.arrays
    fig = figure((13, 3.8))
    ax = fig.add_subplot(1, 3, 1)
    for s in SPACES:
        ax.hist(a[f"cosine_{s}"], bins=40, alpha=0.5, label=f"neighbours from {s}")
    ax.set_xlabel("cosine similarity to the test point, concept space")
    ax.set_ylabel("neighbours")
    ax.legend(fontsize=8)
    ax.set_title("1. similarity preservation", fontsize=10)
    ax = fig.add_subplot(1, 3, 2)
    k = result.metrics["k"]
    for key, label in (
        ("distinct_neighbourhood", f"{k} neighbours"),
        ("distinct_random", f"{k} random points"),
        ("kept_learned", "kept by the learned mask"),
    ):
        ax.hist(a[key], bins=30, alpha=0.5, label=label)
    ax.set_xlabel("distinct concepts")
    ax.set_ylabel("test points")
    ax.legend(fontsize=8)
    ax.set_title("2. local sparsity", fontsize=10)
    ax = fig.add_subplot(1, 3, 3)
    ax.hist(a["prob_gap"], bins=30, color="tab:purple")
    ax.set_xlabel("mean |p dense recon - p masked codes|, top classes")
    ax.set_ylabel("test points")
    agree = result.metrics["selection"]["agreement_dense_recon_vs_masked_codes"]
    ax.set_title(f"3. implicit selection: {100 * agree:.1f}% same label", fontsize=10)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)


def write_analysis_report(path: Path, result: AnalysisResult, settings: dict) -> Path:
    """The analyses' report.md: the accuracy table, one section per analysis, the plot
    (analyses.png beside it), the paper's values and the settings."""
    m = result.metrics
    accuracy = [
        {
            "method": r["method"],
            "accuracy [95% CI]": Estimate(r["accuracy"], r["ci_low"], r["ci_high"]),
        }
        for r in result.accuracy
    ]
    selection = [{"measure": k, "value": v} for k, v in m["selection"].items()]
    paper = [{"quantity": k, "paper (CLIP ViT-B/16, ImageNet)": v} for k, v in PAPER.items()]
    penalties = m["mask_penalty_selection"]
    parts = [
        "# SAE concept analyses",
        f"{m['points']} seeded test points, k = {m['k']} neighbours (found in feature space for "
        "every TTT). See `tttlab.sae.analyses` for the definitions.",
        "## Accuracy: global heads, TTT in three spaces, majority vote",
        _table(accuracy),
        "## 1. Similarity preservation",
        _table(result.similarity),
        "## 2. Local sparsity",
        _table(result.sparsity),
        f"Mask penalty per kept concept: {m['mask_penalty']:g}"
        + (" (chosen on validation rows:)" if penalties else "."),
        *([_table(penalties)] if penalties else []),
        "## 3. Implicit concept selection",
        _table(selection),
        "![analyses](analyses.png)",
        "## The paper's values",
        _table(paper),
        "## Settings",
        f"```json\n{dumps_json(settings).rstrip()}\n```",
    ]
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def _table(rows: list[dict]) -> str:
    """Every column of the rows, in first-seen order, as a Markdown table."""
    return markdown_table(rows, list(dict.fromkeys(k for row in rows for k in row)))
