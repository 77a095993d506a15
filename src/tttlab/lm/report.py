"""The lm-size study's report: does TTT's gain in bits per byte shrink as models grow? The same
family in two sizes (Qwen2.5-Coder 0.5B and 1.5B) is the headline comparison; other families and
the trained ladder (mean and t interval across seeds) are their own series; the random-neighbour
control stands beside every gain; LoRA is compared with tuning the last blocks at equal steps;
and each unit is broken down by subset (the corpus package a document came from).

    write_lm_report(folder, rows, settings)     # units.csv, plot.png, report.md
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tttlab.atomic import atomic_write_text, dumps_json
from tttlab.results import figure, save_figure
from tttlab.results.report import markdown_table, write_rows_csv
from tttlab.results.stats import paired_bootstrap_diff

PAIR = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
"""One family in two sizes: the headline comparison."""
PAPER_GAINS = ((0.5e9, 0.07, "0.5B"), (7e9, 0.02, "7B"))
PAPER = (
    "The paper (Qwen2.5 on the Pile, LoRA, 50 neighbours, one step each) reports TTT gains of "
    "roughly 0.07 bits per byte at 0.5B parameters and 0.02 at 7B, shrinking with size; these "
    "are readings of a figure, so approximate."
)
PAIR_NOTE = (
    "Both Qwen points are Qwen2.5-Coder-Instruct (code-tuned, instruction-tuned) 4-bit GGUF "
    "files de-quantized to float; the 0.5B file was converted from the AWQ checkpoint, the 1.5B "
    "from the float one. Parameters are counted as loaded (the GGUF stores the output head "
    "untied from the embedding)."
)


def setting(row: dict) -> str:
    """How a unit trains at test time, e.g. "lora r8, 1 step/nb" or "last, 1 step/nb"."""
    rank = f" r{row['rank']}" if row.get("tune") == "lora" else ""
    return f"{row['tune']}{rank}, {row['steps']} step/nb"


def by_size(rows: list[dict]) -> list[str]:
    """The rows' models, smallest first."""
    size = {r["model"]: r["parameters"] for r in rows}
    return sorted(size, key=size.get)


def family(model: str) -> str:
    return "GPT ladder" if model.startswith("gpt-") else model.rsplit("-", 1)[0]


def ci(row: dict, key: str, sign: str = "+") -> str:
    return f"{row[key]:{sign}.3f} [{row[key + '_low']:{sign}.3f}, {row[key + '_high']:{sign}.3f}]"


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval across seeds (the interval is nan for one seed)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def gains(row: dict, key: str = "ttt") -> np.ndarray:
    """Per-document gain (base minus `key` bits per byte)."""
    return np.asarray(row["per_doc"]["base"]) - np.asarray(row["per_doc"][key])


def paired_gain_difference(a: dict, b: dict, n_boot: int, seed: int):
    """Gain of unit a minus gain of unit b over the documents both scored (paired bootstrap)."""
    common = [d for d in a["docs"] if d in set(b["docs"])]
    ga = dict(zip(a["docs"], gains(a), strict=True))
    gb = dict(zip(b["docs"], gains(b), strict=True))
    a_, b_ = np.array([ga[d] for d in common]), np.array([gb[d] for d in common])
    return paired_bootstrap_diff(a_, b_, n_boot, seed=seed), len(common)


def verdict(e, shrinking: str = "shrinks", growing: str = "grows") -> str:
    if e.low > 0:
        return shrinking
    if e.high < 0:
        return growing
    return "is not resolved (the interval holds 0)"


# ---------------------------------------------------------------- sections


def pair_section(rows: list[dict], n_boot: int, seed: int) -> tuple[str, list[str]]:
    """The headline: Qwen2.5-Coder 0.5B against 1.5B per TTT setting; and its summary lines."""
    by = {(r["model"], setting(r)): r for r in rows}
    settings = list(dict.fromkeys(setting(r) for r in rows if r["model"] in PAIR))
    if not all(any(r["model"] == m for r in rows) for m in PAIR):
        return (
            "Not in this study: add `--pretrained qwen2.5-coder-0.5b qwen2.5-coder-1.5b` (weights: "
            "`make lm-weights-qwen`).",
            [],
        )
    table, lines = [], []
    for s in settings:
        small, large = by.get((PAIR[0], s)), by.get((PAIR[1], s))
        if not small or not large:
            continue
        e, n = paired_gain_difference(small, large, n_boot, seed)
        word = verdict(e)
        table.append({
            "TTT": s, "docs": n, "gain 0.5B": ci(small, "gain"), "gain 1.5B": ci(large, "gain"),
            "control gain 0.5B": ci(small, "control_gain"),
            "control gain 1.5B": ci(large, "control_gain"),
            "gain 0.5B - gain 1.5B": f"{e.mean:+.3f} [{e.low:+.3f}, {e.high:+.3f}]",
            "the gain": word,
        })  # fmt: skip
        lines.append(
            f"Qwen2.5-Coder 0.5B to 1.5B ({s}): TTT's gain {small['gain']:+.3f} -> "
            f"{large['gain']:+.3f} bits per byte; it {word} (difference {e.mean:+.3f} "
            f"[{e.low:+.3f}, {e.high:+.3f}], paired over {n} documents)."
        )
    text = markdown_table(table, list(table[0])) if table else "No setting ran at both sizes."
    return text + "\n\n" + PAIR_NOTE, lines


def units_section(rows: list[dict]) -> str:
    table = [
        {
            "model": r["model"], "family": family(r["model"]), "parameters": f"{r['parameters']:,}",
            "seed": "" if r.get("seed") is None else r["seed"], "TTT": setting(r),
            "docs": r["n_docs"], "lr": f"{r['lr']:g}", "base bpb": ci(r, "bpb_base", ""),
            "TTT bpb": ci(r, "bpb_ttt", ""), "control bpb": ci(r, "bpb_control", ""),
            "TTT gain": ci(r, "gain"), "control gain": ci(r, "control_gain"),
            "TTT - control": ci(r, "ttt_vs_control"),
            "TTT s/doc": round(r["seconds"]["ttt_s"] / r["n_docs"], 2),
        }
        for r in sorted(rows, key=lambda r: (family(r["model"]), r["parameters"], setting(r)))
    ]  # fmt: skip
    return markdown_table(table, list(table[0]))


def ladder_section(rows: list[dict]) -> tuple[str, list[str]]:
    """Per TTT setting and size: base bits per byte and gain, mean and t interval across seeds;
    and whether the mean falls at every step up the ladder, said plainly."""
    ladder = [r for r in rows if r["model"].startswith("gpt-")]
    if not ladder:
        return "No ladder sizes in this study.", []
    parts, lines = [], []
    for s in dict.fromkeys(setting(r) for r in ladder):
        sizes = by_size([r for r in ladder if setting(r) == s])
        table, means = [], []
        for m in sizes:
            group = [r for r in ladder if r["model"] == m and setting(r) == s]
            base, gain = (
                t_interval([r["bpb_base"] for r in group]),
                t_interval([r["gain"] for r in group]),
            )
            ctrl = t_interval([r["control_gain"] for r in group])
            means.append(base[0])
            table.append({
                "size": m, "parameters": f"{group[0]['parameters']:,}",
                "seeds": " ".join(str(r["seed"]) for r in group),
                "base bpb (per seed)": " ".join(f"{r['bpb_base']:.3f}" for r in group),
                "base bpb, mean [t 95%]": _t(base, ""), "TTT gain, mean [t 95%]": _t(gain),
                "control gain, mean [t 95%]": _t(ctrl),
            })  # fmt: skip
        falls = [a > b for a, b in zip(means, means[1:], strict=False)]
        if len(sizes) < 2:
            line = f"One ladder size only ({s}): no step to check."
        elif all(falls):
            line = f"The ladder's mean bits per byte falls at every step up the ladder ({s})."
        else:
            bad = [f"{sizes[i]} -> {sizes[i + 1]} ({means[i]:.3f} -> {means[i + 1]:.3f})"
                   for i, ok in enumerate(falls) if not ok]  # fmt: skip
            line = (f"The ladder's mean bits per byte does NOT fall at every step ({s}): it does "
                    f"not fall at {', '.join(bad)}.")  # fmt: skip
        lines.append(line)
        parts += [f"**{s}**", markdown_table(table, list(table[0])), line]
    return "\n\n".join(parts), lines


def _t(e: tuple[float, float, float], sign: str = "+") -> str:
    if np.isnan(e[1]):
        return f"{e[0]:{sign}.3f}"
    return f"{e[0]:{sign}.3f} [{e[1]:{sign}.3f}, {e[2]:{sign}.3f}]"


def lora_vs_last_section(rows: list[dict], n_boot: int, seed: int) -> str:
    """Per pretrained model and steps per neighbour: LoRA's gain (each rank) minus the last
    blocks' gain, paired over documents."""
    table = []
    for r in rows:
        if r.get("tune") != "lora":
            continue
        others = [o for o in rows if o["model"] == r["model"] and o.get("tune") == "last"
                  and o["steps"] == r["steps"]]  # fmt: skip
        for o in others:
            e, n = paired_gain_difference(r, o, n_boot, seed)
            table.append({
                "model": r["model"], "steps/nb": r["steps"], "LoRA rank": r["rank"],
                "LoRA gain": ci(r, "gain"), "last-blocks gain": ci(o, "gain"),
                "LoRA - last": f"{e.mean:+.3f} [{e.low:+.3f}, {e.high:+.3f}]", "docs": n,
            })  # fmt: skip
    if not table:
        return "Not in this study: give `--tunes lora last` with pretrained models."
    return markdown_table(table, list(table[0]))


def sweep_section(rows: list[dict]) -> str:
    """LoRA's gain per rank x steps per neighbour, per pretrained model."""
    lora = [r for r in rows if r.get("tune") == "lora"]
    ranks = sorted({r["rank"] for r in lora})
    steps = sorted({r["steps"] for r in lora})
    if len(ranks) * len(steps) < 2:
        return "One LoRA setting only (sweep with `--lora-ranks` and `--steps-per-neighbour`)."
    table = []
    for m in dict.fromkeys(r["model"] for r in lora):
        for st in steps:
            row = {"model": m, "steps/nb": st}
            for k in ranks:
                hit = [r for r in lora if r["model"] == m and r["steps"] == st and r["rank"] == k]
                row[f"rank {k}"] = ci(hit[0], "gain") if hit else ""
            table.append(row)
    return markdown_table(table, list(table[0]))


def subsets_section(rows: list[dict]) -> str:
    """Each unit's rows per subset; a subset with no scored document is said to have none."""
    table = []
    for r in rows:
        for s in r.get("subsets", []):
            cells = {"model": r["model"], "seed": "" if r.get("seed") is None else r["seed"],
                     "TTT": setting(r), "subset": s["subset"], "docs": s["n_docs"]}  # fmt: skip
            if s["n_docs"]:
                cells |= {"base bpb": f"{s['bpb_base']:.3f}", "TTT bpb": f"{s['bpb_ttt']:.3f}",
                          "control bpb": f"{s['bpb_control']:.3f}", "TTT gain": ci(s, "gain"),
                          "control gain": ci(s, "control_gain")}  # fmt: skip
            else:
                cells |= {"base bpb": s.get("note", "no scored documents")}
            table.append(cells)
    if not table:
        return "No subset rows."
    columns = ["model", "seed", "TTT", "subset", "docs", "base bpb", "TTT bpb", "control bpb",
               "TTT gain", "control gain"]  # fmt: skip
    return markdown_table(table, columns)


# ---------------------------------------------------------------- the whole report


def write_lm_report(folder: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> Path:
    """`units.csv`, `plot.png` and `report.md` of a complete lm-size study."""
    folder = Path(folder)
    study = settings.get("study", {})
    n_boot, seed = int(study.get("n_boot", 1000)), int(study.get("seed", 0))
    drop = ("per_doc", "docs", "packages", "subsets", "source", "seconds", "lr_selection")
    flat = [{k: v for k, v in r.items() if k not in drop}
            | {k: round(v, 1) for k, v in r["seconds"].items()} for r in rows]  # fmt: skip
    write_rows_csv(folder / "units.csv", flat)
    plot = plot_lm_study(rows, folder / "plot.png")
    pair, pair_lines = pair_section(rows, n_boot, seed)
    ladder, ladder_lines = ladder_section(rows)
    control = max(rows, key=lambda r: r["control_gain"])
    summary = [
        f"TTT on {rows[0]['n_docs']} held-out documents' retrieved neighbours (nearest first), "
        "beside the same TTT on random pool documents (the control). Gain = bits per byte "
        "before minus after; intervals are 95% bootstrap over documents (paired for "
        "differences), and t intervals across seeds for the ladder.",
        *pair_lines,
        *ladder_lines,
        f"The largest control gain of any unit is {control['control_gain']:+.3f} "
        f"({control['model']}, {setting(control)}).",
        PAPER,
    ]
    guard = settings.get("corpus_record", {}).get("leak_guard") or {}
    if guard:
        summary.append(
            f"The corpus's leak guard removed {guard.get('removed', 0)} pool documents that were "
            f"near-copies of test documents (Jaccard >= {guard.get('threshold')} of word "
            "shingles) before any neighbour was retrieved."
        )
    parts = [
        "# tttlab lm-size study",
        " ".join(summary),
        "## Does the gain shrink within one family? Qwen2.5-Coder 0.5B vs 1.5B",
        pair,
        f"![gain against parameters]({plot.name})",
        "## Every unit",
        units_section(rows),
        "## The trained ladder (mean across seeds)",
        ladder,
        "## LoRA against the last blocks, at equal steps",
        lora_vs_last_section(rows, n_boot, seed),
        "## LoRA rank x steps per neighbour",
        sweep_section(rows),
        "## Per subset (corpus package)",
        subsets_section(rows),
        "## The paper's reference values",
        PAPER + " Source: arXiv 2509.24510, the language-model scaling figure.",
        "## Settings",
        f"```json\n{dumps_json(settings).rstrip()}\n```",
    ]
    path = folder / "report.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def plot_lm_study(rows: list[dict], path: Path) -> Path:
    """TTT's gain (filled) and the control's (hollow) against parameters, 95% intervals: the
    Qwen pair joined, other families as points, the ladder's mean across seeds joined, the
    paper's readings as stars; one colour per TTT setting."""
    fig = figure((7.5, 5))
    ax = fig.subplots()
    names = list(dict.fromkeys(setting(r) for r in rows))
    palette = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    colours = dict(zip(names, palette * 4, strict=False))
    for s in names:
        c = colours[s]
        group = [r for r in rows if setting(r) == s]
        ladder = [r for r in group if r["model"].startswith("gpt-")]
        sizes = by_size(ladder)
        series = []
        for key, fill in (("gain", c), ("control_gain", "none")):
            if sizes:
                x = [next(r["parameters"] for r in ladder if r["model"] == m) for m in sizes]
                e = [t_interval([r[key] for r in ladder if r["model"] == m]) for m in sizes]
                y = np.array([v[0] for v in e])
                err = np.nan_to_num([y - [v[1] for v in e], [v[2] for v in e] - y])
                ax.errorbar(x, y, yerr=err, fmt="-o", color=c, mfc=fill, capsize=3,
                            label=f"ladder, {s}" if key == "gain" else None)  # fmt: skip
            pair = [r for m in PAIR for r in group if r["model"] == m]
            other = [r for r in group if not r["model"].startswith("gpt-") and r not in pair]
            for points, fmt, label in ((pair, "-s", "Qwen2.5-Coder"), (other, "D", "other")):
                if not points:
                    continue
                x = [r["parameters"] for r in points]
                y = np.array([r[key] for r in points])
                err = [
                    y - [r[key + "_low"] for r in points],
                    [r[key + "_high"] for r in points] - y,
                ]
                ax.errorbar(x, y, yerr=err, fmt=fmt, color=c, mfc=fill, capsize=3,
                            label=f"{label}, {s}" if key == "gain" else None)  # fmt: skip
                series += points if key == "gain" else []
        for r in series:
            if not r["model"].startswith("gpt-"):
                ax.annotate(r["model"], (r["parameters"], r["gain"]), fontsize=7)
    px, py, labels = zip(*PAPER_GAINS, strict=True)
    ax.plot(px, py, "*", color="black", ms=11, label="paper (Qwen2.5, figure readings)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("gain in bits per byte (filled: TTT, hollow: control)")
    ax.legend(fontsize=7)
    ax.set_title("lm-size study: TTT's gain against model size, 95% intervals", fontsize=10)
    return save_figure(fig, path, dpi=150)
