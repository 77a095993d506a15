"""The language study's figures: base, TTT and random-control bits per byte per model, with
bootstrap CIs, TTT's gain, and wall time per stage; runs (or resumes) `tttlab study lm-size`.

    python benchmarks/lm_study.py --corpus corpora/debian                    # the ladder, 300 docs
    python benchmarks/lm_study.py --corpus corpora/debian --sizes --pretrained smollm2-135m \
        --docs 100 --tune last --last-layers 2 --bf16                        # SmolLM2's point

Build the corpus first (`tttlab lm corpus --out corpora/debian`). Training seconds are read from
the checkpoints' cache entries (a size trained by an earlier run keeps its first time).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from tttlab.lm.config import DocRetrievalConfig, LMStudyConfig, LMTrainConfig, LMTTTConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.study import LMPlan
from tttlab.lm.train import ladder_model
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.units import collect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", default="runs")
    p.add_argument("--sizes", nargs="*", default=["0.4m", "1.5m", "4m"])
    p.add_argument("--pretrained", nargs="*", default=[])
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--lr-grid", nargs="*", type=float, default=[3e-4, 1e-3, 3e-3])
    p.add_argument("--select-docs", type=int, default=24)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--tune", default="all")
    p.add_argument("--last-layers", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--tokens", type=int, default=LMTrainConfig.tokens)
    a = p.parse_args()
    study = LMPlan(
        LMStudyConfig(corpus=a.corpus, sizes=tuple(a.sizes), pretrained=tuple(a.pretrained),
                      docs=a.docs, lr_grid=tuple(a.lr_grid), select_docs=a.select_docs),
        LMTrainConfig(tokens=a.tokens),
        LMTTTConfig(k=a.k, tune=a.tune, last_layers=a.last_layers, bf16=a.bf16, copies=a.copies),
        DocRetrievalConfig(encoder=a.encoder),
        StudyOptions(out=a.out),
    )  # fmt: skip
    start = time.perf_counter()
    done = run_study(study)
    folder, report = done.folder, done.report
    wall = time.perf_counter() - start
    rows = collect(folder, study.units())
    print(f"# lm-size study: {folder}  ({platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"this run {wall:.0f} s)")  # fmt: skip
    print(f"{rows[0]['n_docs']} documents, k={a.k}, tune={a.tune}, encoder={a.encoder}, "
          f"bf16={a.bf16}; gain = base - after (bits per byte), paired 95% CIs\n")  # fmt: skip
    print(
        "| model | params | lr | base bpb | TTT bpb | control bpb | TTT gain | control gain "
        "| TTT - control | train s | select s | base s | TTT s | control s | TTT s/doc |"
    )
    print("|" + "---|" * 15)
    for r in sorted(rows, key=lambda r: r["parameters"]):
        t = r["seconds"]
        train = _train_seconds(study, r["model"])
        print(
            f"| {r['model']} | {r['parameters']:,} | {r['lr']:g} "
            + "".join(f"| {r[f'bpb_{m}']:.3f} [{r[f'bpb_{m}_low']:.3f}, {r[f'bpb_{m}_high']:.3f}] "
                      for m in ("base", "ttt", "control"))
            + "".join(f"| {r[g]:+.4f} [{r[f'{g}_low']:+.4f}, {r[f'{g}_high']:+.4f}] "
                      for g in ("gain", "control_gain", "ttt_vs_control"))
            + f"| {train} | {t.get('select_s', 0):.0f} | {t['base_s']:.0f} | {t['ttt_s']:.0f} "
            f"| {t['control_s']:.0f} | {t['ttt_s'] / r['n_docs']:.2f} |"
        )  # fmt: skip
    ladder = [r for r in rows if r["model"].startswith("gpt-")]
    ladder.sort(key=lambda r: r["parameters"])
    if len(ladder) > 1:
        pairs = list(zip(ladder, ladder[1:], strict=False))
        falls = all(x["bpb_base"] > y["bpb_base"] for x, y in pairs)
        shrinks = all(x["gain"] > y["gain"] for x, y in pairs)
        print(f"\nbase bpb falls with size: {falls}; TTT's gain shrinks with size: {shrinks}")
    print(f"report: {report}")


def _train_seconds(study: LMPlan, model: str) -> str:
    if not model.startswith("gpt-"):
        return "-"
    _, entry = ladder_model(load_corpus(study.study.corpus), model[4:], study.train, study.cache,
                            progress=False)  # fmt: skip
    return f"{entry.info['seconds']:.0f}"


if __name__ == "__main__":
    main()
