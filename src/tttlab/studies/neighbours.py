"""The neighbourhood study: which neighbours, how many, and is training worth it.

    tttlab study neighbours                                  # Fashion-MNIST, the d = 25 CNN
    tttlab study neighbours --cnn-width 192 --ks 10 50 200 --rules l2 sift
    tttlab study neighbours --features emb/ --model linear   # any feature file
    tttlab study neighbours --features sim/pool.npz --test-features sim/test.npz --model linear

One unit per (noise level, rule, k, seed) scores the global head, TTT, the majority vote and the
soft cache on the same test points (and once the mixture of experts), through the cached
pipeline: a model is trained once per noise level and seed, neighbours once per rule and k. The
report puts every method's accuracy against its seconds per test point (selection included),
says per noise level which method is best and at what cost and where TTT is not worth it, gives
SIFT against the nearest neighbours at the same k with a paired CI, adaptive compute's accuracy
against the share of points fine-tuned, and on simulated features the theory's k-line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tttlab.config import Config, MethodsConfig
from tttlab.methods import TTTClassifier
from tttlab.pipeline import evaluate
from tttlab.pipeline.runner import prepare
from tttlab.pipeline.stages import check_environment, load_data, neighbours
from tttlab.results import paired_bootstrap_diff, write_report, write_rows_csv
from tttlab.results.plots import figure, method_color, save_figure
from tttlab.retrieval import KNNIndex, RetrievalConfig
from tttlab.studies.config import RULES, NeighboursConfig, StudyOptions, width_table
from tttlab.studies.plan import remote_options, section_settings
from tttlab.studies.units import Unit, grid

METHODS = ("global", "majority", "cache", "ttt")
"""Scored in every unit, cheapest first."""
N_BOOT = 1000


@dataclass
class NeighboursPlan:
    """k x selection rule x label noise, every method on the same test points."""

    kind: ClassVar[str] = "neighbours"
    study: NeighboursConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    # ---- units --------------------------------------------------------------------------

    @property
    def on_file(self) -> bool:
        return self.base.data.features is not None

    @property
    def on_cnn(self) -> bool:
        """The study's CNN width (images with the default model); else the base's own model."""
        return not self.on_file and self.base.model.model == "cnn"

    def remote(self) -> NeighboursPlan:
        return dataclasses.replace(self, options=remote_options(self.options))

    def settings(self) -> dict[str, Any]:
        study = section_settings(self.study)
        if not self.on_cnn:
            study.pop("cnn_width"), study.pop("params")
        return {"study": study, "base": self.base.settings()}

    def units(self) -> list[Unit]:
        s = self.study
        return grid(noise=s.noise, rule=s.rules, k=sorted(s.ks), seed=s.seeds)

    def model_config(self, seed: int, noise: float) -> Config:
        """The base run on the study's CNN (its per-width settings), or on the base's own model,
        with the seed, the noise level and the study's folders; no neighbours yet."""
        cfg = self.base
        if self.on_cnn:
            table = width_table(self.study.params, (self.study.cnn_width,))
            model = dataclasses.replace(cfg.model, model="cnn", width=self.study.cnn_width)
            cfg = dataclasses.replace(cfg, model=model)
            cfg = cfg if table is None else table[self.study.cnn_width].config(cfg)
        o = self.options
        run = dataclasses.replace(
            cfg.run, seed=seed, out=o.out, cache_dir=o.cache_dir, progress=o.progress
        )
        data = dataclasses.replace(cfg.data, label_noise=noise)
        return dataclasses.replace(cfg, run=run, data=data, methods=MethodsConfig(("global",)))

    def unit_config(self, unit: Unit) -> Config:
        """The run a unit stands for: every method at the unit's k, by the unit's rule."""
        s = unit.settings
        cfg = self.model_config(s["seed"], s["noise"])
        retrieval = RetrievalConfig(**(_index_settings(cfg.retrieval) | RULES[s["rule"]]))
        methods = METHODS + (("experts",) if self.experts_here(unit) else ())
        ttt = dataclasses.replace(cfg.ttt, k=s["k"], gain="all")  # adaptive: see `adaptive`
        return dataclasses.replace(
            cfg,
            retrieval=retrieval,
            ttt=ttt,
            methods=MethodsConfig(methods, majority_k=s["k"], cache_k=s["k"]),
        )

    def experts_here(self, unit: Unit) -> bool:
        """The one setting the experts are scored at: first rule and noise level, the k of the
        sweep nearest the base run's TTT k."""
        s, study = unit.settings, self.study
        nearest = min(study.ks, key=lambda k: (abs(math.log(k / self.base.ttt.k)), k))
        return (
            study.experts
            and s["rule"] == study.rules[0]
            and s["noise"] == study.noise[0]
            and s["k"] == nearest
        )

    def adaptive_here(self, unit: Unit) -> bool:
        s = unit.settings
        return s["rule"] == self.study.rules[0] and s["noise"] == self.study.noise[0]

    # ---- checks and one unit ------------------------------------------------------------

    def check(self) -> None:
        base = self.model_config(self.study.seeds[0], max(self.study.noise))
        check_environment(base)
        if self.on_cnn:
            width_table(self.study.params, (self.study.cnn_width,))
        pool = len(load_data(base).train_y)
        if min(self.study.ks) > pool:
            raise ValueError(
                f"every k in --ks {list(self.study.ks)} is above the training pool of {pool}: "
                f"give values <= {pool}"
            )
        for unit in self.units():  # settings a unit would refuse, refused before any training
            if unit.settings["k"] <= pool:
                self.unit_config(unit)

    def pool_size(self, seed: int) -> int:
        return len(load_data(self.model_config(seed, 0.0)).train_y)

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        s = unit.settings
        pool = self.pool_size(s["seed"])
        if s["k"] > pool:
            return dict(s) | {"skipped": f"k={s['k']} is above the training pool of {pool}"}
        cfg = self.unit_config(unit)
        ev = evaluate(cfg)
        m, labels = ev.metrics, ev.points.label
        row: dict[str, Any] = dict(s) | {
            "n_test": m["n_test"],
            "n_train": m["n_train"],
            "d": m["feature_width"],
            "sec_select": m["knn_seconds"] / m["n_test"],
        }
        for name, acc in m["methods"].items():
            correct = ev.points.pred[name] == labels
            row |= {
                f"acc_{name}": acc["accuracy"],
                f"acc_{name}_low": acc["ci_low"],
                f"acc_{name}_high": acc["ci_high"],
                f"sec_{name}": acc["seconds_per_point"],
                f"points_{name}": pack(correct),
            }
        g = m["gain_over_global"]["ttt"]
        row |= {"gain": g["mean"], "gain_low": g["low"], "gain_high": g["high"]}
        if self.adaptive_here(unit):
            row |= self.adaptive(cfg, ev.points.pred, labels, row["sec_ttt"])
        return row

    def adaptive(
        self, cfg: Config, pred: dict[str, np.ndarray], labels: np.ndarray, ttt_seconds: float
    ) -> dict[str, Any]:
        """Adaptive compute from this unit's TTT and global answers: per gain rule and share,
        the threshold that fine-tunes that share of validation points, and on the test points
        the share tuned, accuracy and seconds per point (gain plus the tuned share of TTT)."""
        p = prepare(cfg)
        val_nbrs = neighbours(cfg, p.features, cfg.ttt.k, p.cache, split="val").indices
        ttt_correct, global_correct = pred["ttt"] == labels, pred["global"] == labels
        t = cfg.ttt
        out: dict[str, Any] = {}
        for gain in ("margin", "variance"):
            model = TTTClassifier(
                p.model.classifier, k=t.k, epochs=t.epochs, lr=t.lr, gain=gain,
                index=_index(cfg),
            ).fit(p.features.train, p.splits.train_y.numpy())  # fmt: skip
            start = time.perf_counter()
            test_gain = model.predicted_gain(p.features.test, neighbours=p.neighbours.indices)
            gain_seconds = (time.perf_counter() - start) / len(labels)
            val_gain = model.predicted_gain(p.features.val, neighbours=val_nbrs)
            for f in self.study.fractions:
                key = f"{gain}_{round(100 * f)}"
                tuned = (
                    np.ones(len(labels), bool)
                    if f >= 1
                    else test_gain > np.quantile(val_gain, 1 - f)
                )
                correct = np.where(tuned, ttt_correct, global_correct)
                share = float(tuned.mean())
                out |= {
                    f"adaptive_{key}_tuned": share,
                    f"adaptive_{key}_acc": float(correct.mean()),
                    f"adaptive_{key}_sec": gain_seconds + share * ttt_seconds,
                }
        return out

    # ---- report -------------------------------------------------------------------------

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        done = [r for r in rows if "skipped" not in r]
        skipped = [r for r in rows if "skipped" in r]
        write_rows_csv(
            folder / "units.csv",
            [{k: v for k, v in r.items() if not k.startswith("points_")} for r in rows],
        )
        plot = plot_cost(done, folder / "plot.png")
        plot_kcurve(done, folder / "kcurve.png")
        parts = [summary(done, self.study)]
        if skipped:
            parts.append("Skipped: " + "; ".join(sorted({r["skipped"] for r in skipped})) + ".")
        parts += [sift_section(done, self.study), adaptive_section(done, self.study, folder)]
        sim = simulated(self.base.data.features) if self.on_file else None
        if sim is not None:
            parts.append(theory_section(done, sim, folder))
        parts.append("![TTT's accuracy against k per rule](kcurve.png)")
        return write_report(
            folder / "report.md",
            title="tttlab neighbours study",
            summary="\n\n".join(p for p in parts if p),
            table_rows=sorted(done, key=lambda r: (r["noise"], r["rule"], r["k"], r["seed"])),
            columns=["noise", "rule", "k", "seed", *(f"acc_{m}" for m in METHODS), "gain"],
            plot=plot,
            settings={"kind": self.kind, "settings": self.settings()},
        )


def _index_settings(r: RetrievalConfig) -> dict[str, Any]:
    """The base run's search settings, without its rule (the study sets that per unit)."""
    keep = ("kind", "backend", "nlist", "nprobe", "hnsw_m", "batch_size")
    return {k: getattr(r, k) for k in keep + ("sift_lambda", "sift_candidates")}


def _index(cfg: Config) -> KNNIndex:
    return KNNIndex.from_config(cfg.retrieval, cfg.run.seed, cfg.run.device)


SIM_FILE = "sim.json"
"""Beside a simulated feature file: the draw's settings (`tttlab.theory.write_features`)."""


def simulated(features: str) -> dict[str, Any] | None:
    """The simulator's settings beside a feature file, or None for real features."""
    path = Path(features).expanduser()
    record = (path if path.is_dir() else path.parent) / SIM_FILE
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None


# ---- per-point results ----------------------------------------------------------------------


def pack(correct: np.ndarray) -> str:
    """Per-point correctness as base64 of packed bits: 10,000 points in 1.7 kB of JSON."""
    return base64.b64encode(np.packbits(correct.astype(bool))).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _groups(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by `keys` (seeds together), in sorted order of the keys."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return dict(sorted(out.items()))


def _paired(a_rows, b_rows, a: str, b: str) -> Any:
    """Paired bootstrap of method a's correctness (in a_rows) minus b's (in b_rows), the same
    test points of the same seeds."""
    by_seed = {r["seed"]: r for r in b_rows}
    xa, xb = [], []
    for r in sorted(a_rows, key=lambda r: r["seed"]):
        other = by_seed[r["seed"]]
        xa.append(unpack(r[f"points_{a}"], r["n_test"]))
        xb.append(unpack(other[f"points_{b}"], other["n_test"]))
    return paired_bootstrap_diff(
        np.concatenate(xa).astype(float), np.concatenate(xb).astype(float), n_boot=N_BOOT
    )


def _pts(g) -> str:
    return f"{100 * g.mean:+.2f} [{100 * g.low:+.2f}, {100 * g.high:+.2f}]"


def options(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (method, rule, k) a noise level offers, averaged over seeds: accuracy, seconds per
    point; global and experts once, majority, cache and TTT per rule and k."""
    out = []
    for (rule, k), g in _groups(rows, "rule", "k").items():
        for m in ("majority", "cache", "ttt"):
            out.append({"method": m, "rule": rule, "k": k, "acc": _mean(g, f"acc_{m}"),
                        "sec": _mean(g, f"sec_{m}"), "rows": g})  # fmt: skip
    first = next(iter(_groups(rows, "rule", "k").values()))
    out.append({"method": "global", "rule": "", "k": 0, "acc": _mean(first, "acc_global"),
                "sec": _mean(first, "sec_global"), "rows": first})  # fmt: skip
    with_experts = [r for r in rows if "acc_experts" in r]
    if with_experts:
        out.append({"method": "experts", "rule": "", "k": 0,
                    "acc": _mean(with_experts, "acc_experts"),
                    "sec": _mean(with_experts, "sec_experts"), "rows": with_experts})  # fmt: skip
    return out


def _label(o: dict[str, Any]) -> str:
    return o["method"] if not o["rule"] else f"{o['method']} ({o['rule']}, k={o['k']})"


def summary(rows: list[dict[str, Any]], study: NeighboursConfig) -> str:
    """Per noise level: the best method and its cost, the cheapest option as good (within the
    best's paired CI), TTT's best against the best method without training, and the k where
    TTT peaks per rule with the paper's shape (noisy at small k, worse again at large k)."""
    lines = []
    for (noise,), g in _groups(rows, "noise").items():
        opts = options(g)
        best = max(opts, key=lambda o: (o["acc"], -o["sec"]))
        lines.append(
            f"**Noise {noise:g}.** Best: {_label(best)}, {100 * best['acc']:.2f}% at "
            f"{1000 * best['sec']:.3g} ms per point."
        )
        trained = [o for o in opts if o["method"] == "ttt"]
        free = [o for o in opts if o["method"] in ("global", "majority", "cache")]
        if trained and free:
            t, f = max(trained, key=lambda o: o["acc"]), max(free, key=lambda o: o["acc"])
            d = _paired(t["rows"], f["rows"], "ttt", f["method"])
            verdict = (
                "TTT is worth it here" if d.low > 0 else
                "TTT is not worth it here: no better than training-free"
                if d.high >= 0 else "TTT is worse than training-free here"
            )  # fmt: skip
            lines.append(
                f"Best TTT ({t['rule']}, k={t['k']}, {1000 * t['sec']:.3g} ms) against the best "
                f"without training, {_label(f)} ({1000 * f['sec']:.3g} ms): {_pts(d)} points "
                f"(paired 95% CI): {verdict}."
            )
        for (rule,), rg in _groups(g, "rule").items():
            ks = _groups(rg, "k")
            accs = {k: _mean(r, "acc_ttt") for (k,), r in ks.items()}
            peak = max(accs, key=accs.get)
            low = {k: _mean(r, "acc_ttt_low") for (k,), r in ks.items()}
            small, large = min(accs), max(accs)
            shape = []
            if small != peak:
                shape.append("noisy at small k" if accs[small] < low[peak] else "flat at small k")
            if large != peak:
                shape.append(
                    "worse again at large k" if accs[large] < low[peak] else "flat at large k"
                )
            lines.append(
                f"TTT by {rule}: peaks at k={peak} ({100 * accs[peak]:.2f}%); "
                + (", ".join(shape) or "the sweep has one k")
                + " (below the peak's 95% CI counts as worse)."
            )
    return "\n\n".join(lines)


def sift_section(rows: list[dict[str, Any]], study: NeighboursConfig) -> str:
    """SIFT against the nearest neighbours by the same distance, at the same k and noise:
    TTT's paired accuracy gain and the selection's cost per point against the search alone."""
    pairs = [("sift", "l2"), ("sift-cosine", "cosine")]
    table = []
    for sift, near in pairs:
        if sift not in study.rules or near not in study.rules:
            continue
        by = _groups(rows, "noise", "rule", "k")
        for (noise, rule, k), g in by.items():
            if rule != sift or (noise, near, k) not in by:
                continue
            other = by[(noise, near, k)]
            d = _paired(g, other, "ttt", "ttt")
            table.append(
                f"| {noise:g} | {sift} vs {near} | {k} | {_pts(d)} | "
                f"{1000 * _mean(g, 'sec_select'):.3g} | {1000 * _mean(other, 'sec_select'):.3g} | "
                f"{1000 * _mean(g, 'sec_ttt'):.3g} | {1000 * _mean(other, 'sec_ttt'):.3g} |"
            )
    if not table:
        return ""
    head = (
        "## SIFT against the nearest neighbours\n\nTTT's accuracy on SIFT's choice minus on "
        "the k nearest by the same distance (paired 95% CI, points); the selection's milliseconds "
        "per test point (SIFT: its search for the candidates, then the greedy choice) against the "
        "kNN search alone, and TTT's with its selection.\n\n"
        "| noise | rules | k | gain | select SIFT | kNN alone | TTT (SIFT) | TTT (nearest) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(table)


def adaptive_section(rows: list[dict[str, Any]], study: NeighboursConfig, folder: Path) -> str:
    with_adaptive = [r for r in rows if any(k.startswith("adaptive_") for k in r)]
    if not with_adaptive:
        return ""
    lines = [
        "## Adaptive compute\n\nFine-tune only the test points whose predicted gain is above a "
        "threshold set on validation points (the rest keep the global head's answer); "
        f"rule {study.rules[0]}, noise {study.noise[0]:g}.\n",
        "| k | gain | target | tuned | accuracy | ms/point | global | TTT on all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (k,), g in _groups(with_adaptive, "k").items():
        for gain in ("margin", "variance"):
            for f in study.fractions:
                key = f"adaptive_{gain}_{round(100 * f)}"
                lines.append(
                    f"| {k} | {gain} | {100 * f:.0f}% | {100 * _mean(g, key + '_tuned'):.1f}% | "
                    f"{100 * _mean(g, key + '_acc'):.2f}% | {1000 * _mean(g, key + '_sec'):.3g} | "
                    f"{100 * _mean(g, 'acc_global'):.2f}% | {100 * _mean(g, 'acc_ttt'):.2f}% |"
                )
    plot_adaptive(with_adaptive, study, folder / "adaptive.png")
    return "\n".join(lines) + "\n\n![adaptive compute](adaptive.png)"


def theory_section(rows: list[dict[str, Any]], sim: dict[str, Any], folder: Path) -> str:
    """On a simulated draw: TTT's error against k beside the theory's sigma^2 s log(d1/s) / k,
    its constant fitted where the theory applies (s log(d1/s) <= k <= the cluster size)."""
    clean = [r for r in rows if r["noise"] == min(x["noise"] for x in rows)]
    d1, s, sigma = sim["d1"], sim["s"], sim["sigma"]
    low, high = s * math.log(d1 / s), sim["n_train"] // sim["clusters"]  # the cluster size
    lines = ["## The theory beside it", ""]
    fig = figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for (rule,), g in _groups(clean, "rule").items():
        ks = _groups(g, "k")
        k = np.array([key[0] for key in ks])
        err = np.array([1 - _mean(r, "acc_ttt") for r in ks.values()])
        ax.plot(k, err, marker="o", label=f"TTT ({rule})")
        inside = (k >= low) & (k <= high) & (err > 0)
        line = sigma**2 * s * math.log(d1 / s) / k
        if inside.sum() >= 2:
            scale = float(np.exp(np.mean(np.log(err[inside] / line[inside]))))
            slope = float(np.polyfit(np.log(k[inside]), np.log(err[inside]), 1)[0])
            ax.plot(k, scale * line, ls="--", color="grey")
            lines.append(
                f"- {rule}: fitted slope of log error against log k {slope:.2f} over "
                f"{int(inside.sum())} k in the theory's range (the theory's is -1); "
                f"constant {scale:.3g}."
            )
        else:
            lines.append(f"- {rule}: fewer than two k in the theory's range [{low:.0f}, {high}].")
    for x in (low, high):
        ax.axvline(x, color="grey", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="k", ylabel="TTT test error")
    ax.legend(fontsize=8)
    save_figure(fig, folder / "theory.png")
    lines += [
        "",
        f"Simulated: d1 = {d1}, s = {s}, d2 = {sim['d2']}, sigma = {sigma}, "
        f"{sim['clusters']} clusters of {high}. Dashed: sigma^2 s log(d1/s) / k with its "
        "constant fitted in the range (dotted: s log(d1/s) and the cluster size); below it a "
        "neighbourhood is too small to fit s concepts, above it it reaches into other clusters, "
        "and the error stops falling as 1/k.",
        "",
        "![theory](theory.png)",
    ]
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------


MARKERS = {"majority": "s", "cache": "^", "ttt": "o"}


def plot_cost(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against seconds per test point, one panel per noise level; TTT's points by rule,
    joined in order of k and labelled by k."""
    levels = _groups(rows, "noise")
    fig = figure((5.5 * len(levels), 4.5))
    colors = {}
    for i, ((noise,), g) in enumerate(levels.items()):
        ax = fig.add_subplot(1, len(levels), i + 1)
        for o in options(g):
            if o["method"] in ("global", "experts"):
                ax.scatter(o["sec"], o["acc"], color=method_color(o["method"]), marker="*",
                           s=90, zorder=3, label=o["method"])  # fmt: skip
        for (rule,), rg in _groups(g, "rule").items():
            color = colors.setdefault(rule, f"C{len(colors)}")
            for m in ("majority", "cache", "ttt"):
                ks = _groups(rg, "k")
                x = [_mean(r, f"sec_{m}") for r in ks.values()]
                y = [_mean(r, f"acc_{m}") for r in ks.values()]
                ax.plot(x, y, marker=MARKERS[m], color=color, alpha=1 if m == "ttt" else 0.45,
                        ls="-" if m == "ttt" else "none", ms=5 if m == "ttt" else 4,
                        label=f"{m} ({rule})")  # fmt: skip
                if m == "ttt":
                    for (k,), xi, yi in zip(ks, x, y, strict=True):
                        ax.annotate(str(k), (xi, yi), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")  # fmt: skip
        ax.set(xscale="log", xlabel="seconds per test point (selection included)",
               ylabel="test accuracy", title=f"label noise {noise:g}")  # fmt: skip
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_kcurve(rows: list[dict[str, Any]], path: Path) -> Path:
    """TTT's accuracy against k per rule (95% CI), the majority vote and cache dotted; one panel
    per noise level."""
    levels = _groups(rows, "noise")
    fig = figure((5 * len(levels), 4))
    for i, ((noise,), g) in enumerate(levels.items()):
        ax = fig.add_subplot(1, len(levels), i + 1)
        for j, ((rule,), rg) in enumerate(_groups(g, "rule").items()):
            ks = _groups(rg, "k")
            k = [key[0] for key in ks]
            acc = np.array([_mean(r, "acc_ttt") for r in ks.values()])
            lo = np.array([_mean(r, "acc_ttt_low") for r in ks.values()])
            hi = np.array([_mean(r, "acc_ttt_high") for r in ks.values()])
            ax.errorbar(k, acc, yerr=[acc - lo, hi - acc], marker="o", ms=4, capsize=2,
                        color=f"C{j}", label=f"TTT ({rule})")  # fmt: skip
            for m, ls in (("majority", ":"), ("cache", "--")):
                ax.plot(k, [_mean(r, f"acc_{m}") for r in ks.values()], ls=ls, color=f"C{j}",
                        alpha=0.5, label=f"{m} ({rule})")  # fmt: skip
        ax.axhline(_mean(g, "acc_global"), color=method_color("global"), lw=1, label="global")
        ax.set(xscale="log", xlabel="k", ylabel="test accuracy", title=f"label noise {noise:g}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_adaptive(rows: list[dict[str, Any]], study: NeighboursConfig, path: Path) -> Path:
    """Accuracy against the share of test points fine-tuned, per gain rule, at each k."""
    fig = figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for j, ((k,), g) in enumerate(_groups(rows, "k").items()):
        for gain, ls in (("margin", "-"), ("variance", "--")):
            keys = [f"adaptive_{gain}_{round(100 * f)}" for f in study.fractions]
            x = [0.0] + [_mean(g, key + "_tuned") for key in keys]
            y = [_mean(g, "acc_global")] + [_mean(g, key + "_acc") for key in keys]
            ax.plot(x, y, marker="o", ls=ls, color=f"C{j}", ms=4, label=f"k={k}, {gain}")
    ax.set(xlabel="share of test points fine-tuned", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)
