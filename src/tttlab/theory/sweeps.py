"""`tttlab simulate`: the theory's sweeps as a study plan (resumable, shardable, local workers or
Slurm like every study), then their report.

    done = run_study(SimulatePlan(Sim(), SimulateConfig(sweeps=("k",))))

Sweeps, each around the base draw `Sim` (every flag of `tttlab simulate`):

- d2: error against d2/d1 in the setting of the 1 - d2/d1 result: independent inputs (tightness
  0: isotropic concepts), no label noise, n_train >= samples_per_feature * d2 (the result is about
  the best global head, which least squares reaches only for n >> d2).
- k: error against k, with sigma^2 s log(d1/s) / k; the theory's regime is
  s log(d1/s) <= k <= the cluster size (a larger k reaches into other clusters).
- s: error against s (the local fit needs s < d2).
- tightness: error from independent inputs (0) to tight clusters (1).
- map: TTT's gain over global on a grid of d2/d1 and s: where specialising pays.

A unit is one setting and seed: its id says which (e.g. `sweep=k,k=64,seed=0`), and its result
depends on its settings alone (`tttlab.studies.plan`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tttlab.atomic import atomic_write_text, dumps_json
from tttlab.memory import MemoryEstimate, available_bytes, check_memory
from tttlab.results import figure, markdown_table, method_color, save_figure, write_rows_csv
from tttlab.retrieval import search_memory_bytes
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import remote_options
from tttlab.studies.units import Unit
from tttlab.theory.concepts import generate
from tttlab.theory.config import Sim, SimulateConfig
from tttlab.theory.estimators import _CHUNK_FLOATS, check_k, evaluate, neighbours

ESTIMATORS: tuple[str, ...] = ("global", "ttt", "concept_ttt", "oracle")
"""The theory's estimators, in report order."""
GLOBAL_TOLERANCE = 0.05
"""The global head's error should match 1 - d2/d1 within this relative gap."""
SLOPE_TOLERANCE = 0.25
"""TTT's fitted log-error vs log-k slope should lie within this of -1 in the theory's regime."""


# ---------------------------------------------------------------- units


def units(sc: SimulateConfig) -> list[Unit]:
    """Every sweep's units, in sweep order, seeds varying fastest."""
    axis = {"d2": ("ratio", sc.ratios), "k": ("k", sc.ks), "s": ("s", sc.ss),
            "tightness": ("tightness", sc.tightnesses)}  # fmt: skip
    settings = []
    for sweep in sc.sweeps:
        if sweep == "map":
            cells = [(s, r) for s in sc.map_ss for r in sc.map_ratios]
            settings += [{"sweep": sweep, "ratio": r, "s": s} for s, r in cells]
        else:
            name, values = axis[sweep]
            settings += [{"sweep": sweep, name: v} for v in values]
    return [Unit.from_settings(u | {"seed": x}) for u in settings for x in sc.seeds]


def unit_setting(base: Sim, sc: SimulateConfig, unit: Unit) -> tuple[Sim, int]:
    """The draw and k a unit stands for: the base with the unit's change and seed."""
    u = unit.settings
    change: dict[str, Any] = {"seed": u["seed"]}
    k = sc.k
    sweep = u["sweep"]
    if sweep in ("d2", "map"):
        change["d2"] = max(1, round(u["ratio"] * base.d1))
    if sweep == "d2":
        change |= {"tightness": 0.0, "sigma": 0.0}
        change["n_train"] = max(base.n_train, sc.samples_per_feature * change["d2"])
    if sweep in ("s", "map"):
        change["s"] = u["s"]
        if base.cluster_concepts is not None:
            change["cluster_concepts"] = max(base.cluster_concepts, u["s"])
    if sweep == "tightness":
        change["tightness"] = u["tightness"]
    if sweep == "k":
        k = u["k"]
    try:
        sim = dataclasses.replace(base, **change)
        check_k(k, sim)
    except ValueError as err:
        raise ValueError(f"unit {unit.id}: {err}") from None
    return sim, k


MAX_UNIT_FLOPS = 1e15
"""Work one simulated unit may take: beyond it a setting is a typo (--n-train 1000000000)."""
SIM_FIXES = (
    "Lower --n-train, --n-test, --d1, --d2 or --outputs (or the sweep's values), or use a machine "
    "with more memory"
)


def unit_cost(sim: Sim, k: int) -> tuple[MemoryEstimate, float]:
    """The peak memory (bytes, by part, float64 throughout) and the floating-point operations of
    one unit of `sim` at k, from its sizes alone (before anything is drawn)."""
    n, T, m, s = sim.n_train + sim.n_test, sim.outputs, sim.shared, sim.s
    d1, d2, nt, B = sim.d1, sim.d2, sim.n_train, sim.n_test
    parts = {
        "concepts": 8 * n * (4 * s + 2 * m) + (16 * n * d1 if 4 * s > d1 else 0),
        "features": 8 * (d2 * d1 + d1 * T + n * (2 * d2 + 3 * T)),
        "neighbours": search_memory_bytes(nt, d2, B, k),
    }
    flops = 2 * n * s * (d2 + T) + 2 * nt * B * d2 + 2 * nt * d2 * d2
    if sim.task == "regression":
        parts["fits"] = 24 * (d1 * d1 + d2 * d2) + 32 * _CHUNK_FLOATS
        flops += 2 * nt * s * s + d1**3 / 3 + B * (2 * k * k * (d2 + s * k) + 2 * k**3)
    else:
        parts["fits"] = 12 * n * d1 + 24 * d2 * T
        flops += 2 * nt * (d1 + d2) * T * 100 + B * 50 * k * d2 * T * 6
    return MemoryEstimate(parts, available_bytes(), "its largest unit"), float(flops)


def run_unit(base: Sim, sc: SimulateConfig, unit: Unit) -> dict[str, Any]:
    """One unit's row: its settings, every estimator's error and what its neighbourhoods hold."""
    sim, k = unit_setting(base, sc, unit)
    draw = generate(sim)
    row = evaluate(draw, k, sc.ridge, neighbours(draw, k))
    ranks = effective_rank(draw.train.psi_ND)
    return {
        **unit.settings,
        "d1": sim.d1,
        "d2": sim.d2,
        "s": sim.s,
        "k": k,
        "n_train": sim.n_train,
        "tightness": sim.tightness,
        "sigma": sim.sigma,
        "cluster_size": sim.cluster_size,
        "d2_over_d1": sim.d2 / sim.d1,
        **row,
        "rank_pr": ranks["participation_ratio"],
        "rank_entropy": ranks["entropy_rank"],
    }


def effective_rank(X_ND: np.ndarray) -> dict[str, float]:
    """Two effective ranks of the features' covariance eigenvalues l: the participation ratio
    (sum l)^2 / sum l^2, and the entropy effective rank exp(H(l / sum l)) (Roy and Vetterli,
    2007). Both are d for isotropic features and 1 for features on a line."""
    X = np.asarray(X_ND, dtype=np.float64)
    X = X - X.mean(0)
    lam = np.clip(np.linalg.eigvalsh(X.T @ X / max(len(X) - 1, 1)), 0, None)
    total = lam.sum()
    if total <= 0:
        return {"participation_ratio": 0.0, "entropy_rank": 0.0}
    p = lam[lam > 0] / total
    return {
        "participation_ratio": float(total**2 / (lam**2).sum()),
        "entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
    }


# ---------------------------------------------------------------- running


@dataclass
class SimulatePlan:
    """The simulator's sweeps as a study: one unit per setting and seed around the base draw."""

    kind: ClassVar[str] = "simulate"
    sim: Sim = field(default_factory=Sim)
    sweep: SimulateConfig = field(default_factory=SimulateConfig)
    options: StudyOptions = field(default_factory=StudyOptions)

    def units(self) -> list[Unit]:
        return units(self.sweep)

    def check(self) -> None:
        """Every unit's draw and k are valid, and the largest unit fits in memory and a sane
        amount of work, before the first one runs."""
        costs = [unit_cost(*unit_setting(self.sim, self.sweep, u)) for u in self.units()]
        peak = max(costs, key=lambda c: c[0].total)[0]
        flops = [c[1] for c in costs]
        if self.options.progress:
            print(f"simulate: {len(costs)} units, about {sum(flops) / 1e9:.3g} GFLOP in all; "
                  f"{peak.describe()}", file=sys.stderr)  # fmt: skip
        check_memory(peak, SIM_FIXES)
        if max(flops) > MAX_UNIT_FLOPS:
            raise ValueError(
                f"one unit of these settings takes about {max(flops):.3g} floating-point "
                f"operations, more than the {MAX_UNIT_FLOPS:.0e} tttlab runs as one unit (days on "
                f"a workstation). {SIM_FIXES}"
            )

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        return run_unit(self.sim, self.sweep, unit)

    def remote(self) -> SimulatePlan:
        return dataclasses.replace(self, options=remote_options(self.options))

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        return report_simulation(folder, self.sim, self.sweep, rows)


# ---------------------------------------------------------------- checks against the theory


def global_check(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The d2 sweep's global error beside 1 - d2/d1 (mean over seeds), with the relative gap."""
    out = []
    if not any("theory_global" in r for r in rows):
        return out  # classification
    for ratio, group in _by(rows, "d2", "ratio"):
        measured = float(np.mean([r["err_global"] for r in group]))
        theory = group[0]["theory_global"]
        n, d2 = group[0]["n_train"], group[0]["d2"]
        finite_n = theory + (theory + group[0]["sigma"] ** 2) * d2 / max(n - d2 - 1, 1)
        gap = (measured - theory) / theory if theory > 0 else float("nan")
        out.append({
            "d2/d1": ratio, "d2": d2, "n_train": n, "measured": measured,
            "theory 1-d2/d1": theory, "relative gap": gap, "theory at this n": finite_n,
        })  # fmt: skip
    return out


def slope_check(rows: Sequence[dict[str, Any]], method: str = "ttt") -> dict[str, Any] | None:
    """The fitted slope of log error vs log k over the k sweep's points in the theory's regime,
    s log(d1/s) <= k <= cluster size; None with fewer than two such points."""
    pts = [(k, np.mean([r[f"err_{method}"] for r in g])) for k, g in _by(rows, "k", "k")]
    if not pts:
        return None
    r0 = next(r for r in rows if r["sweep"] == "k")
    low, high = r0["s"] * math.log(r0["d1"] / r0["s"]), r0["cluster_size"]
    inside = [(k, e) for k, e in pts if low <= k <= high]
    if len(inside) < 2:
        return {"slope": None, "k_low": low, "k_high": high, "points": len(inside)}
    slope = float(np.polyfit(np.log([k for k, _ in inside]), np.log([e for _, e in inside]), 1)[0])
    return {"slope": slope, "k_low": low, "k_high": high, "points": len(inside)}


def _by(rows: Sequence[dict[str, Any]], sweep: str, key: str) -> list[tuple[Any, list[dict]]]:
    """The sweep's rows grouped by `key` (seeds together), sorted by it."""
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        if r["sweep"] == sweep:
            groups.setdefault(r[key], []).append(r)
    return sorted(groups.items())


# ---------------------------------------------------------------- report


AXES = {
    "d2": ("d2_over_d1", "d2 / d1 (independent inputs)", False),
    "k": ("k", "k (neighbours)", True),
    "s": ("s", "s (active concepts per input)", True),
    "tightness": ("tightness", "tightness (0 independent, 1 tight clusters)", False),
}
"""Per sweep: the row column on the x axis, its label, and whether the axis is logarithmic."""


def report_simulation(
    folder: Path, base: Sim, sc: SimulateConfig, rows: list[dict[str, Any]]
) -> Path:
    """Write units.csv, one PNG per sweep and report.md for a complete study's rows."""
    write_rows_csv(folder / "units.csv", rows)
    methods = [m for m in ESTIMATORS if f"err_{m}" in rows[0]]
    parts = [
        "# tttlab simulate: when does specialisation pay?",
        _summary(rows, base),
    ]
    for sweep in sc.sweeps:
        mine = [r for r in rows if r["sweep"] == sweep]
        if sweep == "map":
            png = plot_map(mine, folder / "map.png")
            columns = ["d2_over_d1", "s", "err_global", "err_ttt", "gain"]
            table = [r | {"gain": r["err_global"] - r["err_ttt"]} for r in mine]
        else:
            png = plot_sweep(mine, sweep, methods, folder / f"{sweep}.png")
            columns = [AXES[sweep][0], *(f"err_{m}" for m in methods)]
            columns += ["theory_global"] if sweep == "d2" else ["theory_ttt", "same_cluster"]
            columns = [c for c in columns if c in mine[0]]  # classification: no theory lines
            table = mine
        extra = [c for c in ("seed",) if len(sc.seeds) > 1]
        parts += [f"## Sweep: {sweep}", _sweep_note(sweep, rows),
                  markdown_table(table, [*columns[:1], *extra, *columns[1:]]),
                  f"![{sweep}]({png.name})"]  # fmt: skip
    settings = {"sim": dataclasses.asdict(base), "sweep": dataclasses.asdict(sc)}
    parts += ["## Settings", f"```json\n{dumps_json(settings).rstrip()}\n```"]
    path = folder / "report.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def _summary(rows: Sequence[dict[str, Any]], base: Sim) -> str:
    lines = [
        f"Sparse concepts: d1 = {base.d1} concepts, s = {base.s} active per input, features "
        f"d2 = {base.d2}, noise sigma = {base.sigma} (signal variance 1), {base.clusters} "
        f"clusters, tightness {base.tightness}. "
        + (
            "Errors are excess errors relative to the signal's variance: mean (prediction - "
            "noise-free signal)^2 / var(signal)."
            if base.task == "regression"
            else f"Classification into {base.outputs} classes: errors are error rates."
        )
    ]
    gc = global_check(rows)
    if gc:
        worst = max(abs(r["relative gap"]) for r in gc)
        verdict = "within" if worst <= GLOBAL_TOLERANCE else "NOT within"
        lines.append(
            f"- Global head vs 1 - d2/d1 (independent inputs, no label noise): largest relative "
            f"gap {100 * worst:.1f}%, {verdict} {100 * GLOBAL_TOLERANCE:.0f}%."
        )
    sl = slope_check(rows) if base.task == "regression" else None
    if sl is not None and sl["slope"] is not None:
        ok = abs(sl["slope"] + 1) <= SLOPE_TOLERANCE
        lines.append(
            f"- TTT error vs k: fitted slope {sl['slope']:.2f} over {sl['points']} values of k in "
            f"[s log(d1/s), cluster size] = [{sl['k_low']:.0f}, {sl['k_high']}] "
            f"({'within' if ok else 'NOT within'} {SLOPE_TOLERANCE} of -1)."
        )
    mp = [r for r in rows if r["sweep"] == "map"]
    if mp:
        wins = sum(r["err_ttt"] < r["err_global"] for r in mp)
        lines.append(f"- Regime map: TTT beats the global head in {wins} of {len(mp)} cells.")
    return "\n".join(lines)


def _sweep_note(sweep: str, rows: Sequence[dict[str, Any]]) -> str:
    if sweep == "d2" and global_check(rows):
        table = markdown_table(global_check(rows), list(global_check(rows)[0]))
        return (
            "The global head's error beside the theory's 1 - d2/d1 (mean over seeds). 'theory at "
            "this n' adds least squares' finite-sample excess, (1 - d2/d1 + sigma^2) d2 / "
            f"(n - d2 - 1).\n\n{table}"
        )
    if sweep == "d2":
        return "Classification: the global head's error rate against d2/d1."
    if sweep == "k":
        sl = slope_check(rows)
        fitted = "" if sl is None or sl["slope"] is None else f" Fitted slope: {sl['slope']:.3f}."
        return (
            "Dashed: sigma^2 s log(d1/s) / k. The theory's regime is s log(d1/s) <= k <= the "
            "cluster size (dotted); beyond it a neighbourhood reaches into other clusters." + fitted
        )
    if sweep == "s":
        return "The local fit needs s < d2 (dotted): at s >= d2 a neighbourhood's concepts no "\
            "longer fit in the features."  # fmt: skip
    if sweep == "tightness":
        return "From independent inputs (0) to clusters whose members share every concept (1)."
    return (
        "Colour: log10(global error / TTT error); red: TTT better (specialise here), blue: the "
        "global head better."
    )


def _mean_by(rows: Sequence[dict[str, Any]], x: str, col: str) -> tuple[list, list]:
    groups: dict[Any, list[float]] = {}
    for r in rows:
        if r.get(col) is not None:
            groups.setdefault(r[x], []).append(r[col])
    xs = sorted(groups)
    return xs, [float(np.mean(groups[v])) for v in xs]


def plot_sweep(rows: Sequence[dict[str, Any]], sweep: str, methods: Sequence[str], path: Path):
    """Each estimator's error against the sweep's axis (log error), the theory's line dashed."""
    x, label, log_x = AXES[sweep]
    fig = figure((7, 4.5))
    ax = fig.add_subplot()
    for m in methods:
        xs, ys = _mean_by(rows, x, f"err_{m}")
        ax.plot(xs, ys, "o-", color=method_color(m), label=m, ms=4)
    theory = "theory_global" if sweep == "d2" else "theory_ttt"
    if theory in rows[0]:
        xs, ys = _mean_by(rows, x, theory)
        name = "1 - d2/d1" if sweep == "d2" else "sigma^2 s log(d1/s) / k"
        ax.plot(xs, ys, "--", color="black", label=f"theory: {name}")
    r0 = rows[0]
    if sweep == "k":
        ax.axvline(r0["cluster_size"], color="gray", linestyle=":", label="cluster size")
        ax.axvline(r0["s"] * math.log(r0["d1"] / r0["s"]), color="gray", linestyle="-.",
                   label="s log(d1/s)")  # fmt: skip
    if sweep == "s":
        ax.axvline(r0["d2"], color="gray", linestyle=":", label="d2")
    if log_x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("error / signal variance" if "theory_ttt" in r0 else "error rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"sweep: {sweep}", fontsize=11)
    return save_figure(fig, path, dpi=120)


def plot_map(rows: Sequence[dict[str, Any]], path: Path, marks: Sequence[dict] = ()) -> Path:
    """The regime map: log10(global error / TTT error) over (d2/d1, s); `marks` are points
    ({"x", "y", "label"}) drawn on top, e.g. real features placed by the bridge."""
    ratios = sorted({r["ratio"] for r in rows})
    ss = sorted({r["s"] for r in rows})
    gain = np.full((len(ss), len(ratios)), np.nan)
    for (i, s), (j, ratio) in ((a, b) for a in enumerate(ss) for b in enumerate(ratios)):
        cell = [r for r in rows if r["s"] == s and r["ratio"] == ratio]
        if cell:
            g = np.mean([np.log10(r["err_global"] / max(r["err_ttt"], 1e-12)) for r in cell])
            gain[i, j] = g
    fig = figure((7, 5))
    ax = fig.add_subplot()
    lim = max(0.5, float(np.nanmax(np.abs(gain))))
    im = ax.imshow(gain, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(ss)):
        for j in range(len(ratios)):
            if np.isfinite(gain[i, j]):
                ax.text(j, i, f"{gain[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
    ax.set_yticks(range(len(ss)), [str(s) for s in ss])
    ax.set_xlabel("d2 / d1")
    ax.set_ylabel("s (active concepts per input)")
    for mark in marks:
        ax.plot(mark["x"], mark["y"], "*", color="gold", ms=16, markeredgecolor="black")
        ax.annotate(mark["label"], (mark["x"], mark["y"]), textcoords="offset points",
                    xytext=(8, 8), fontsize=8)  # fmt: skip
    fig.colorbar(im, ax=ax, label="log10(global error / TTT error): > 0 specialise")
    ax.set_title("where TTT beats the global head (red)", fontsize=11)
    return save_figure(fig, path, dpi=120)
