"""`tttlab study lm-size`: TTT's gain in bits per byte against model size, the paper's language
study on one machine. One work unit per model: the trained ladder's sizes, then the pretrained
models as their own points. Each unit scores the same held-out documents before TTT, after TTT on
their retrieved neighbours, and after the same TTT on random pool documents (the control).

    tttlab study lm-size --corpus corpora/debian --sizes 0.4m 1.5m 4m --docs 300
    tttlab study lm-size --corpus ... --executor slurm --cpus-per-task 8   # a Slurm job array
    sbatch --array=0-3 --wrap "tttlab study lm-size --corpus ... "   # or shards by hand
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tttlab.lm.config import DocRetrievalConfig, LMStudyConfig, LMTrainConfig, LMTTTConfig
from tttlab.lm.corpus import Corpus, load_corpus
from tttlab.lm.model import LanguageModel
from tttlab.lm.pretrained import gguf_path, load_pretrained
from tttlab.lm.retrieve import neighbours, random_neighbours
from tttlab.lm.train import ladder_model
from tttlab.lm.ttt import bits_per_byte, doc_bits, ttt_bits
from tttlab.pipeline.cache import StageCache
from tttlab.results import figure, save_figure
from tttlab.results.report import write_report, write_rows_csv
from tttlab.results.stats import bootstrap_ci, paired_bootstrap_diff
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import remote_options
from tttlab.studies.units import Unit
from tttlab.tensors import check_device

PAPER = (
    "The paper (Qwen2.5 on the Pile) reports TTT gains of roughly 0.07 bits per byte at 0.5B "
    "parameters and 0.02 at 7B, shrinking with size (readings of a figure, approximate)."
)


@functools.lru_cache(maxsize=2)
def _corpus(folder: str) -> Corpus:
    """A corpus folder, read once per process (plans are pickled without it)."""
    return load_corpus(folder)


@dataclass
class LMPlan:
    """The lm-size study: one unit per model, base / TTT / control bits per byte."""

    kind: ClassVar[str] = "lm-size"
    study: LMStudyConfig = field(default_factory=LMStudyConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    ttt: LMTTTConfig = field(default_factory=LMTTTConfig)
    retrieval: DocRetrievalConfig = field(default_factory=DocRetrievalConfig)
    options: StudyOptions = field(default_factory=StudyOptions)

    @property
    def corpus(self) -> Corpus:
        return _corpus(str(Path(self.study.corpus).expanduser()))

    @property
    def cache(self) -> StageCache:
        o = self.options
        return StageCache(Path(o.cache_dir or Path(o.out) / "cache").expanduser())

    def settings(self) -> dict[str, Any]:
        """What the units read, the corpus by its key (its settings and package checksums)."""
        return {
            "study": asdict(self.study), "corpus": self.corpus.key, "train": asdict(self.train),
            "ttt": asdict(self.ttt), "retrieval": asdict(self.retrieval),
        }  # fmt: skip

    def units(self) -> list[Unit]:
        s = self.study
        return [Unit(f"model=gpt-{m}", {"model": f"gpt-{m}"}) for m in s.sizes] + [
            Unit(f"model={m}", {"model": m}) for m in s.pretrained
        ]

    def check(self) -> None:
        corpus = self.corpus
        scored_documents(corpus, self.study)  # too many docs fails here, before any training
        if self.ttt.k > len(corpus.pool):
            raise ValueError(
                f"k={self.ttt.k} neighbours per document, but the pool has {len(corpus.pool)} "
                f"documents: choose --k <= {len(corpus.pool)}, or build a larger corpus"
            )
        check_device(self.study.device, "--device")
        for name in self.study.pretrained:  # a missing weights package fails before training
            gguf_path(name)

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        return score_model(self, self.corpus, unit.settings["model"])

    def remote(self) -> LMPlan:
        corpus = str(Path(self.study.corpus).expanduser().resolve())
        study = replace(self.study, corpus=corpus)
        return replace(self, study=study, options=remote_options(self.options))

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        """`units.csv`, `plot.png` and `report.md` of a complete lm-size study."""
        corpus = self.corpus
        drop = ("per_doc", "docs", "source", "seconds", "lr_selection")
        flat = [{k: v for k, v in r.items() if k not in drop}
                | {f"{k}": round(v, 1) for k, v in r["seconds"].items()} for r in rows]  # fmt: skip
        write_rows_csv(folder / "units.csv", flat)
        plot = plot_lm_study(rows, folder / "plot.png")
        ladder = [r for r in rows if r["model"].startswith("gpt-")]
        table = [_table_row(r) for r in sorted(rows, key=lambda r: r["parameters"])]
        return write_report(
            folder / "report.md",
            title="tttlab lm-size study",
            summary=_summary(ladder, rows) + "\n\n" + PAPER,
            table_rows=table,
            columns=list(table[0]),
            plot=plot,
            settings=self.settings() | {"corpus_record": corpus.record.get("totals", {})},
        )


def scored_documents(corpus: Corpus, s: LMStudyConfig) -> tuple[list[int], list[int]]:
    """The scored test documents, the first `docs` of a seeded shuffle (a larger n extends a
    smaller), and the validation documents that choose the learning rate (the next ones)."""
    n = s.docs + (s.select_docs if s.lr_grid else 0)
    if n > len(corpus.test):
        raise ValueError(
            f"--docs {s.docs}{f' + --select-docs {s.select_docs}' if s.lr_grid else ''} but the "
            f"corpus holds {len(corpus.test)} test documents: lower them, or build the corpus "
            "with a larger --test-fraction"
        )
    order = np.random.default_rng(s.seed).permutation(len(corpus.test))[:n].tolist()
    return order[: s.docs], order[s.docs :]


def load_model(plan: LMPlan, corpus: Corpus, name: str) -> tuple[LanguageModel, float]:
    """A ladder GPT (trained now if not cached) or a pretrained model, on the study's device;
    and seconds to get it."""
    s = plan.study
    start = time.perf_counter()
    check_device(s.device, "--device")
    if name.startswith("gpt-"):
        lm, _ = ladder_model(corpus, name[4:], plan.train, plan.cache, plan.options.progress,
                             device=s.device)  # fmt: skip
    else:
        lm = load_pretrained(name)
    lm.module.to(s.device)
    return lm, time.perf_counter() - start


def score_model(plan: LMPlan, corpus: Corpus, name: str) -> dict[str, Any]:
    """One unit: base, TTT and random-control bits per byte of the study's documents."""
    s, cfg, progress = plan.study, plan.ttt, plan.options.progress
    times: dict[str, float] = {}
    lm, times["model_s"] = load_model(plan, corpus, name)
    chosen, validation = scored_documents(corpus, s)
    start = time.perf_counter()
    texts = [corpus.test[i].text for i in chosen + validation]
    idx = neighbours([d.text for d in corpus.pool], texts, cfg.k, plan.retrieval,
                     plan.cache.root / "lm-embeddings")  # fmt: skip
    control = random_neighbours(len(corpus.pool), len(chosen), cfg.k, s.seed)
    times["retrieval_s"] = time.perf_counter() - start
    queries = [lm.encode(corpus.test[i].text) for i in chosen]
    n_bytes = np.array([corpus.test[i].n_bytes for i in chosen])

    def encoded(rows: np.ndarray) -> list[list[list[int]]]:
        return [
            [[lm.bos_id, *lm.tokenize(corpus.pool[j].text)] for j in row[: cfg.k]] for row in rows
        ]

    selection = {}
    if s.lr_grid:  # the same chosen rate then serves TTT and the control
        start = time.perf_counter()
        val_q = [lm.encode(corpus.test[i].text) for i in validation]
        val_bytes = np.array([corpus.test[i].n_bytes for i in validation])
        val_n = encoded(idx[len(chosen) :])
        for lr in s.lr_grid:
            bits = ttt_bits(lm, val_q, val_n, replace(cfg, lr=lr), progress, desc=f"lr {lr:g}")
            selection[lr] = float(bits_per_byte(bits, val_bytes).mean())
        cfg = replace(cfg, lr=min(selection, key=selection.get))
        times["select_s"] = time.perf_counter() - start
    idx = idx[: len(chosen)]

    start = time.perf_counter()
    base = doc_bits(lm, queries, bf16=cfg.bf16)
    times["base_s"] = time.perf_counter() - start
    start = time.perf_counter()
    after = ttt_bits(lm, queries, encoded(idx), cfg, progress, desc=f"ttt {name}")
    times["ttt_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ctrl = ttt_bits(lm, queries, encoded(control), cfg, progress, desc=f"control {name}")
    times["control_s"] = time.perf_counter() - start
    return summarise(name, lm.parameters, n_bytes, base, after, ctrl, s.n_boot, s.seed) | {
        "seconds": times, "source": lm.source, "docs": [corpus.test[i].id for i in chosen],
        "lr": cfg.lr, "lr_selection": {f"{lr:g}": bpb for lr, bpb in selection.items()},
    }  # fmt: skip


def summarise(
    name: str, parameters: int, n_bytes: np.ndarray, base: np.ndarray, after: np.ndarray,
    control: np.ndarray, n_boot: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Mean bits per byte of each condition with bootstrap CIs, and TTT's and the control's
    gains (base - after: positive is better) with paired bootstrap CIs, over documents."""
    bpb = {
        m: bits_per_byte(v, n_bytes)
        for m, v in (("base", base), ("ttt", after), ("control", control))
    }
    row: dict[str, Any] = {
        "model": name,
        "parameters": int(parameters),
        "n_docs": int(n_bytes.size),
    }
    for m, v in bpb.items():
        e = bootstrap_ci(v, n_boot, seed=seed)
        row |= {f"bpb_{m}": e.mean, f"bpb_{m}_low": e.low, f"bpb_{m}_high": e.high}
    for m, (a, b) in {"gain": ("base", "ttt"), "control_gain": ("base", "control"),
                      "ttt_vs_control": ("control", "ttt")}.items():  # fmt: skip
        e = paired_bootstrap_diff(bpb[a], bpb[b], n_boot, seed=seed)
        row |= {m: e.mean, f"{m}_low": e.low, f"{m}_high": e.high}
    row["per_doc"] = {m: v.round(6).tolist() for m, v in bpb.items()}
    return row


# ---------------------------------------------------------------- report


def _table_row(r: dict) -> dict[str, Any]:
    """The report's row of a unit: bits per byte and gains with their 95% CIs, as text (the
    shared table reads a bare `gain` as accuracy points)."""

    def ci(key: str, sign: str = "") -> str:
        return f"{r[key]:{sign}.3f} [{r[f'{key}_low']:{sign}.3f}, {r[f'{key}_high']:{sign}.3f}]"

    return {
        "model": r["model"], "parameters": f"{r['parameters']:,}", "docs": r["n_docs"],
        "lr": r["lr"], "base bpb": ci("bpb_base"), "TTT bpb": ci("bpb_ttt"),
        "control bpb": ci("bpb_control"), "TTT gain": ci("gain", "+"),
        "control gain": ci("control_gain", "+"), "TTT - control": ci("ttt_vs_control", "+"),
        "TTT s/doc": round(r["seconds"]["ttt_s"] / r["n_docs"], 2),
    }  # fmt: skip


def _summary(ladder: list[dict], rows: list[dict]) -> str:
    parts = [
        f"TTT on {rows[0]['n_docs']} held-out documents' retrieved neighbours, against the same "
        "TTT on random pool documents (control). Gain = bits per byte before minus after."
    ]
    if len(ladder) >= 2:
        ladder = sorted(ladder, key=lambda r: r["parameters"])
        falls = all(a["bpb_base"] > b["bpb_base"] for a, b in zip(ladder, ladder[1:], strict=False))
        shrinks = all(a["gain"] > b["gain"] for a, b in zip(ladder, ladder[1:], strict=False))
        gains = ", ".join(f"{r['model']}: {r['gain']:+.3f}" for r in ladder)
        parts.append(
            "Across the trained ladder, base bits per byte "
            f"{'falls' if falls else 'does NOT fall'} "
            f"with size, and TTT's gain {'shrinks' if shrinks else 'does NOT shrink'} with size "
            f"({gains})."
        )
    return " ".join(parts)


def plot_lm_study(rows: list[dict], path: Path) -> Path:
    """Bits per byte of base, TTT and control against parameters (ladder joined, pretrained
    models as separate markers), above TTT's and the control's gains with their CIs."""
    fig = figure((7, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ladder = sorted(
        (r for r in rows if r["model"].startswith("gpt-")), key=lambda r: r["parameters"]
    )
    other = [r for r in rows if not r["model"].startswith("gpt-")]
    colours = {"base": "tab:blue", "ttt": "tab:red", "control": "tab:gray"}
    for m, c in colours.items():
        for group, style in ((ladder, "-o"), (other, "s")):
            if not group:
                continue
            x = [r["parameters"] for r in group]
            top.plot(x, [r[f"bpb_{m}"] for r in group], style, color=c,
                     label=m if group is ladder or not ladder else None)  # fmt: skip
            top.fill_between(x, [r[f"bpb_{m}_low"] for r in group],
                             [r[f"bpb_{m}_high"] for r in group], color=c, alpha=0.15)  # fmt: skip
    for key, c, label in (
        ("gain", "tab:red", "TTT gain"),
        ("control_gain", "tab:gray", "control gain"),
    ):
        for group, style in ((ladder, "-o"), (other, "s")):
            if not group:
                continue
            x = [r["parameters"] for r in group]
            y = np.array([r[key] for r in group])
            err = [y - [r[f"{key}_low"] for r in group], [r[f"{key}_high"] for r in group] - y]
            bottom.errorbar(x, y, yerr=err, fmt=style, color=c, capsize=3,
                            label=label if group is ladder or not ladder else None)  # fmt: skip
    for r in other:
        top.annotate(r["model"], (r["parameters"], r["bpb_base"]), fontsize=8)
    bottom.axhline(0, color="black", lw=0.8)
    top.set_ylabel("bits per byte (test documents)")
    bottom.set_ylabel("gain (bits per byte)")
    bottom.set_xlabel("parameters (squares: pretrained models)")
    bottom.set_xscale("log")
    top.legend()
    bottom.legend()
    fig.suptitle("lm-size study: TTT on retrieved neighbours vs random neighbours\n"
                 "bands and bars: bootstrap 95% CIs", fontsize=11)  # fmt: skip
    return save_figure(fig, path, dpi=150)
