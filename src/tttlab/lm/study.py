"""`tttlab study lm-size`: TTT's gain in bits per byte against model size, the paper's language
study on one machine. A unit is one model (a ladder size with one training seed, or a pretrained
model) with one way of training it at test time (LoRA of a rank, or the last blocks, ...) for a
number of steps per neighbour. Each unit scores the same held-out documents before TTT, after TTT
on their retrieved neighbours, and after the same TTT on random pool documents (the control).

    tttlab study lm-size --corpus corpora/debian --sizes 0.4m 1.5m 4m --seeds 0 1 2 \\
        --pretrained qwen2.5-coder-0.5b qwen2.5-coder-1.5b --tunes lora last --k 10 --bf16
    tttlab study lm-size ... --lora-ranks 4 8 16 64 --steps-per-neighbour 1 2 4
    tttlab study lm-size --corpus ... --executor slurm --cpus-per-task 8   # a Slurm job array
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tttlab.lm.config import (
    DocRetrievalConfig,
    DocTTTConfig,
    LMStudyConfig,
    LMTrainConfig,
    LMTTTConfig,
)
from tttlab.lm.corpus import Corpus, load_corpus
from tttlab.lm.model import LanguageModel
from tttlab.lm.pretrained import gguf_header, gguf_path, load_pretrained
from tttlab.lm.report import write_lm_report
from tttlab.lm.retrieve import neighbours, random_neighbours
from tttlab.lm.subsets import subset_rows, summarise
from tttlab.lm.train import ladder_model
from tttlab.lm.ttt import bits_per_byte, doc_bits, ttt_bits
from tttlab.pipeline.cache import StageCache
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import remote_options
from tttlab.studies.units import Unit
from tttlab.tensors import check_device


@functools.lru_cache(maxsize=2)
def _corpus(folder: str) -> Corpus:
    """A corpus folder, read once per process (plans are pickled without it)."""
    return load_corpus(folder)


@dataclass
class LMPlan:
    """The lm-size study: one unit per model, seed and TTT setting; base / TTT / control bits
    per byte."""

    kind: ClassVar[str] = "lm-size"
    study: LMStudyConfig = field(default_factory=LMStudyConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    ttt: DocTTTConfig = field(default_factory=DocTTTConfig)
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
            "ttt": asdict(self.ttt), "retrieval": self.retrieval.settings(),
        }  # fmt: skip

    def units(self) -> list[Unit]:
        """Ladder sizes x seeds, then pretrained models, each x tunes (LoRA for pretrained models
        only) x LoRA ranks (for LoRA) x steps per neighbour."""
        s, out = self.study, []
        models = [(f"gpt-{m}", seed) for m in s.sizes for seed in s.seeds]
        for model, seed in models + [(m, None) for m in s.pretrained]:
            for tune in s.tunes:
                if tune == "lora" and seed is not None:
                    continue  # the ladder GPTs are not transformers models: no adapters
                for rank in s.lora_ranks if tune == "lora" else (None,):
                    for steps in s.steps_per_neighbour:
                        values = {"model": model, "seed": seed, "tune": tune, "rank": rank,
                                  "steps": steps}  # fmt: skip
                        values = {k: v for k, v in values.items() if v is not None}
                        out.append(Unit(",".join(f"{k}={v}" for k, v in values.items()), values))
        return out

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
            path, _ = gguf_path(name)
            if "lora" in self.study.tunes:
                check_rank(name, gguf_header(path), max(self.study.lora_ranks))

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        return score_unit(self, self.corpus, unit.settings)

    def remote(self) -> LMPlan:
        corpus = str(Path(self.study.corpus).expanduser().resolve())
        study = replace(self.study, corpus=corpus)
        return replace(self, study=study, options=remote_options(self.options))

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        """`units.csv`, `plot.png` and `report.md` of a complete lm-size study."""
        record = {"totals": self.corpus.record.get("totals", {}),
                  "leak_guard": self.corpus.record.get("leak_guard", {})}  # fmt: skip
        return write_lm_report(folder, rows, self.settings() | {"corpus_record": record})


def check_rank(name: str, header: dict, rank: int) -> None:
    """A LoRA rank above the model's width, refused from its GGUF header before it loads (the
    narrower k and v projections are checked when adapters are placed)."""
    width = header.get("width")
    if width and rank > width:
        raise ValueError(
            f"--lora-ranks holds {rank}, above {name}'s width of {width}: choose ranks of at "
            f"most {width}"
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


def unit_ttt(plan: LMPlan, settings: dict[str, Any]) -> LMTTTConfig:
    """The unit's TTT settings: the plan's, with its tune, LoRA rank and steps per neighbour."""
    rank = settings.get("rank", LMTTTConfig.lora_rank)
    return LMTTTConfig(**asdict(plan.ttt), tune=settings["tune"], lora_rank=rank,
                       steps_per_neighbour=settings["steps"])  # fmt: skip


@functools.lru_cache(maxsize=1)
def _pretrained(name: str, device: str) -> LanguageModel:
    """The last pretrained model loaded, kept for the next unit (units of one model follow each
    other, and a large one takes minutes to load)."""
    lm = load_pretrained(name)
    lm.module.to(device)
    return lm


def load_model(
    plan: LMPlan, corpus: Corpus, settings: dict[str, Any]
) -> tuple[LanguageModel, float]:
    """A ladder GPT of the unit's seed (trained now if not cached) or a pretrained model, on the
    study's device; and seconds to get it."""
    s, name = plan.study, settings["model"]
    start = time.perf_counter()
    check_device(s.device, "--device")
    if name.startswith("gpt-"):
        lm, _ = ladder_model(corpus, name[4:], plan.train, plan.cache, plan.options.progress,
                             device=s.device, seed=settings["seed"])  # fmt: skip
        lm.module.to(s.device)
    else:
        lm = _pretrained(name, s.device)
    return lm, time.perf_counter() - start


def score_unit(plan: LMPlan, corpus: Corpus, settings: dict[str, Any]) -> dict[str, Any]:
    """One unit: base, TTT and random-control bits per byte of the study's documents, overall
    and per subset (the document's package)."""
    s, progress = plan.study, plan.options.progress
    cfg = unit_ttt(plan, settings)
    times: dict[str, float] = {}
    lm, times["model_s"] = load_model(plan, corpus, settings)
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
    after = ttt_bits(lm, queries, encoded(idx), cfg, progress, desc=f"ttt {settings['model']}")
    times["ttt_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ctrl = ttt_bits(lm, queries, encoded(control), cfg, progress, desc="control")
    times["control_s"] = time.perf_counter() - start
    bits = {"base": base, "ttt": after, "control": ctrl}
    packages = [corpus.test[i].package for i in chosen]
    subsets = [p["name"] for p in corpus.record.get("packages", [])]
    return (
        {k: settings.get(k) for k in ("model", "seed", "tune", "rank", "steps")}
        | {"parameters": int(lm.parameters)}
        | summarise(n_bytes, bits, s.n_boot, s.seed)
        | {
            "per_doc": {m: bits_per_byte(v, n_bytes).round(6).tolist() for m, v in bits.items()},
            "docs": [corpus.test[i].id for i in chosen],
            "packages": packages,
            "subsets": subset_rows(packages, n_bytes, bits, subsets, s.n_boot, s.seed),
            "seconds": times, "source": lm.source, "lr": cfg.lr,
            "lr_selection": {f"{lr:g}": bpb for lr, bpb in selection.items()},
        }
    )  # fmt: skip
