"""Bits per byte before TTT, after it and after the random-neighbour control, with bootstrap CIs,
over all scored documents and per subset (the corpus package each document came from, as the Pile
reports its sources).

    row = summarise(n_bytes, {"base": b, "ttt": t, "control": c})        # bpb_base, gain, ...
    rows = subset_rows(packages, n_bytes, bits, subsets=corpus_packages)  # one row per subset
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tttlab.results.stats import bootstrap_ci, paired_bootstrap_diff

CONDITIONS = ("base", "ttt", "control")
GAINS = {"gain": ("base", "ttt"), "control_gain": ("base", "control"),
         "ttt_vs_control": ("control", "ttt")}  # fmt: skip
"""Each gain as (before, after): before minus after, so positive is better."""


def summarise(
    n_bytes: np.ndarray, bits: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean bits per byte of each condition with bootstrap CIs, and the gains with paired
    bootstrap CIs, over documents (each document weighs the same)."""
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    bpb = {m: np.asarray(bits[m], dtype=np.float64) / n_bytes for m in CONDITIONS if m in bits}
    row: dict[str, Any] = {"n_docs": int(n_bytes.size)}
    for m, v in bpb.items():
        e = bootstrap_ci(v, n_boot, seed=seed)
        row |= {f"bpb_{m}": e.mean, f"bpb_{m}_low": e.low, f"bpb_{m}_high": e.high}
    for name, (a, b) in GAINS.items():
        if a in bpb and b in bpb:
            e = paired_bootstrap_diff(bpb[a], bpb[b], n_boot, seed=seed)
            row |= {name: e.mean, f"{name}_low": e.low, f"{name}_high": e.high}
    return row


def subset_rows(
    labels: Sequence[str],
    n_bytes: np.ndarray,
    bits: Mapping[str, np.ndarray],
    subsets: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One `summarise` row per subset (`labels[i]` is document i's), in the order of `subsets`
    then of first appearance; a subset in `subsets` with no scored document gets a row that says
    so (n_docs 0 and a note) rather than none."""
    labels = list(labels)
    if len(labels) != len(n_bytes):
        raise ValueError(f"{len(labels)} subset labels for {len(n_bytes)} documents")
    order = list(dict.fromkeys([*subsets, *labels]))
    rows = []
    for name in order:
        at = np.array([i for i, s in enumerate(labels) if s == name], dtype=np.int64)
        if at.size == 0:
            rows.append({"subset": name, "n_docs": 0,
                         "note": "no scored test documents in this subset"})  # fmt: skip
            continue
        part = {m: np.asarray(v)[at] for m, v in bits.items()}
        rows.append({"subset": name} | summarise(np.asarray(n_bytes)[at], part, n_boot, seed))
    return rows
