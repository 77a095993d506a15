"""The theory's two results, measured beside their predictions in one run.

    python benchmarks/theory_checks.py            # d1 = 1000: about two minutes on 2 cores
    python benchmarks/theory_checks.py --quick    # d1 = 300: seconds

1. Global head vs 1 - d2/d1, for d2/d1 in [0.05, 0.9], on independent inputs (isotropic concepts),
   without label noise and with n_train = 100 d2 (the result is about the population optimum; the
   finite-n column adds least squares' excess, (1 - d2/d1) d2 / (n - d2 - 1)). Pass: every
   relative gap within 5%.
2. TTT's error against k in tight clusters (sigma = 0.5): the fitted slope of log error vs log k
   over s log(d1/s) <= k <= the cluster size, against the theory's -1 (sigma^2 s log(d1/s) / k
   printed beside it). Pass: within 0.25 of -1. Then where the rate breaks: k beyond the cluster
   size, and s close to or above d2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from tttlab.theory import Sim, generate
from tttlab.theory.estimators import evaluate, neighbours
from tttlab.theory.sweeps import GLOBAL_TOLERANCE, SLOPE_TOLERANCE


def global_check(d1: int, ratios: list[float], outputs: int) -> bool:
    print(f"1. global head vs 1 - d2/d1: d1 = {d1}, independent inputs, sigma = 0, n = 100 d2")
    print(f"{'d2/d1':>6} {'d2':>5} {'n':>7} {'measured':>9} {'1-d2/d1':>8} {'gap':>7} "
          f"{'finite-n':>9} {'oracle':>8} {'seconds':>7}")  # fmt: skip
    worst = 0.0
    for ratio in ratios:
        d2 = round(ratio * d1)
        sim = Sim(d1=d1, s=8, d2=d2, n_train=max(20000, 100 * d2), n_test=2000, sigma=0.0,
                  tightness=0.0, outputs=outputs)  # fmt: skip
        t = time.perf_counter()
        r = evaluate(generate(sim), k=64)
        theory = r["theory_global"]
        finite = theory * (1 + d2 / (sim.n_train - d2 - 1))
        gap = (r["err_global"] - theory) / theory
        worst = max(worst, abs(gap))
        print(f"{ratio:>6g} {d2:>5} {sim.n_train:>7} {r['err_global']:>9.4f} {theory:>8.4f} "
              f"{100 * gap:>+6.1f}% {finite:>9.4f} {r['err_oracle']:>8.1e} "
              f"{time.perf_counter() - t:>7.1f}")  # fmt: skip
    ok = worst <= GLOBAL_TOLERANCE
    print(f"largest relative gap {100 * worst:.1f}%: {'PASS' if ok else 'FAIL'} "
          f"(within {100 * GLOBAL_TOLERANCE:.0f}%)\n")  # fmt: skip
    return ok


def k_sweep(sim: Sim, ks: list[int]) -> tuple[list[tuple[int, dict]], dict]:
    """Errors at every k on one draw (neighbours found once, at the largest k)."""
    draw = generate(sim)
    nbr = neighbours(draw, max(ks))
    return [(k, evaluate(draw, k, nbr_BK=nbr)) for k in ks], {
        "low": sim.s * math.log(sim.d1 / sim.s),
        "high": sim.cluster_size,
    }


def fitted_slope(rows: list[tuple[int, dict]], low: float, high: float, col: str) -> float | None:
    inside = [(k, r[col]) for k, r in rows if low <= k <= high]
    if len(inside) < 2:
        return None
    return float(np.polyfit(np.log([k for k, _ in inside]), np.log([e for _, e in inside]), 1)[0])


def rate_check(sim: Sim, ks: list[int]) -> bool:
    print(
        f"2. TTT error vs k: d1 = {sim.d1}, s = {sim.s}, d2 = {sim.d2}, sigma = {sim.sigma}, "
        f"tight clusters of {sim.cluster_size} training points"
    )
    rows, region = k_sweep(sim, ks)
    print(f"{'k':>5} {'ttt':>9} {'theory':>9} {'ratio':>6} {'concept':>9} {'global':>7} "
          f"{'same cluster':>12}  regime")  # fmt: skip
    for k, r in rows:
        inside = region["low"] <= k <= region["high"]
        why = "theory" if inside else ("k < s log(d1/s)" if k < region["low"] else "k > cluster")
        print(f"{k:>5} {r['err_ttt']:>9.2e} {r['theory_ttt']:>9.2e} "
              f"{r['err_ttt'] / r['theory_ttt']:>6.2f} {r['err_concept_ttt']:>9.2e} "
              f"{r['err_global']:>7.3f} {r['same_cluster']:>12.3f}  {why}")  # fmt: skip
    slope = fitted_slope(rows, region["low"], region["high"], "err_ttt")
    concept = fitted_slope(rows, region["low"], region["high"], "err_concept_ttt")
    ok = slope is not None and abs(slope + 1) <= SLOPE_TOLERANCE
    print(f"fitted slope over k in [{region['low']:.0f}, {region['high']}]: TTT {slope:.3f}, "
          f"concept-space TTT {concept:.3f}; theory -1: {'PASS' if ok else 'FAIL'} "
          f"(within {SLOPE_TOLERANCE})")  # fmt: skip
    beyond = [(k, r["err_ttt"]) for k, r in rows if k > region["high"]]
    if beyond:
        at_edge = min((abs(k - region["high"]), r["err_ttt"]) for k, r in rows)[1]
        times = [f"k = {k}: {e / at_edge:.1f}x" for k, e in beyond]
        print(f"beyond the cluster, the error against that at the cluster size: {', '.join(times)}")
    return ok


def breaks_near_d2(base: Sim, ks: list[int]) -> None:
    print(f"\n   where the rate breaks: s against d2 = {base.d2} (same k rule)")
    print(f"{'s':>5} {'s/d2':>5} {'slope':>7}  errors at k = {ks}")
    for s in (base.d2 // 4, base.d2 // 2, base.d2, 2 * base.d2):
        sim = dataclasses.replace(base, s=s)
        rows, region = k_sweep(sim, ks)
        slope = fitted_slope(rows, max(region["low"], min(ks)), region["high"], "err_ttt")
        shown = " ".join(f"{r['err_ttt']:.2e}" for _, r in rows)
        print(f"{s:>5} {s / sim.d2:>5.2f} {slope if slope is not None else float('nan'):>7.3f}  "
              f"{shown}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="d1 = 300, fewer points: seconds")
    args = parser.parse_args()
    t = time.perf_counter()
    if args.quick:
        ok1 = global_check(300, [0.05, 0.3, 0.9], outputs=32)
        rate = Sim(d1=300, s=4, d2=40, n_train=12000, clusters=60, n_test=300)
        ok2 = rate_check(rate, [8, 16, 32, 64, 128, 200, 400, 800])
        breaks_near_d2(Sim(d1=300, s=4, d2=16, n_train=12000, clusters=60, n_test=300),
                       [16, 32, 64, 128, 200])  # fmt: skip
    else:
        ok1 = global_check(1000, [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9], outputs=64)
        rate = Sim(d1=1000, s=8, d2=100, n_train=50000, clusters=125, n_test=500)
        ok2 = rate_check(rate, [8, 16, 32, 64, 128, 256, 400, 800])
        breaks_near_d2(Sim(d1=1000, s=8, d2=32, n_train=50000, clusters=125, n_test=500),
                       [32, 64, 128, 256, 400])  # fmt: skip
    print(f"\nwall time {time.perf_counter() - t:.0f} s; global check "
          f"{'PASS' if ok1 else 'FAIL'}, rate check {'PASS' if ok2 else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    main()
