"""`tttlab study lm-size` end to end on a tiny corpus: the smallest ladder GPT trained for a few
steps (per seed), tiny transformers models standing in for the pretrained ones (LoRA and the
last blocks), TF-IDF neighbours; units, resume, shards and the report."""

import json
import pickle

import numpy as np
import pytest
import torch

from tttlab.catalog import load_plan
from tttlab.cli import main
from tttlab.lm import study as study_mod
from tttlab.lm.config import DocRetrievalConfig, DocTTTConfig, LMStudyConfig, LMTrainConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.study import LMPlan, scored_documents
from tttlab.lm.subsets import summarise
from tttlab.studies.config import ShardConfig, SlurmConfig, StudyOptions
from tttlab.studies.plan import resume_study, run_study, study_progress, study_task
from tttlab.studies.units import collect, unit_file

pytestmark = pytest.mark.slow  # lm-size end to end: each test trains tiny GPTs

TOPICS = {
    "kernel": "the kernel schedules tasks and the driver maps memory pages for the device",
    "perl": "a perl regular expression matches the string and the hash holds each key",
    "fortune": "the wise fool laughs at the moon while the cat sleeps by the warm fire",
}


def write_corpus(folder, per_topic=8, test_per_topic=2):
    """A corpus folder as `tttlab lm corpus` writes it, from three topics' sentences."""
    rng = np.random.default_rng(0)
    rows = {"pool": [], "test": []}
    for topic, sentence in TOPICS.items():
        words = sentence.split()
        for i in range(per_topic + test_per_topic):
            text = "\n".join(" ".join(rng.permutation(words)) for _ in range(6)) + "\n"
            split = "test" if i >= per_topic else "pool"
            rows[split].append({"id": f"{topic}/f{i}#0", "package": topic, "source": f"f{i}",
                                "text": text})  # fmt: skip
    folder.mkdir(parents=True)
    for split, docs in rows.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "corpus.json").write_text(json.dumps({"config": {"tiny": True}, "totals": {}}))
    return folder


GPT04 = "model=gpt-0.4m,seed=0,tune=all,steps=1"


def tiny_study(tmp_path, **study) -> LMPlan:
    corpus = write_corpus(tmp_path / "corpus")
    return LMPlan(
        LMStudyConfig(**{"corpus": str(corpus), "sizes": ("0.4m",), "pretrained": (), "docs": 4,
                         "lr_grid": (), "n_boot": 200, "tunes": ("all",)} | study),
        LMTrainConfig(tokens=2048, tokens_per_parameter=0, seq=32, batch=4, vocab=300),
        DocTTTConfig(k=3, lr=3e-3, copies=2),
        DocRetrievalConfig(encoder="tfidf", tfidf_dims=8),
        StudyOptions(out=str(tmp_path / "runs"), progress=False),
    )  # fmt: skip


def test_lm_size_study_scores_base_ttt_and_control_and_reports(tmp_path):
    study = tiny_study(tmp_path)
    done = run_study(study)
    folder, report = done.folder, done.report
    assert (
        done.ran == [GPT04]
        and report is not None
        and report.is_file()
        and (folder / "plot.png").is_file()
    )
    (row,) = collect(folder, study.units())
    assert row["model"] == "gpt-0.4m" and row["n_docs"] == 4 and row["seed"] == 0
    for m in ("base", "ttt", "control"):
        assert row[f"bpb_{m}_low"] <= row[f"bpb_{m}"] <= row[f"bpb_{m}_high"]
        assert len(row["per_doc"][m]) == 4
    assert row["gain"] == pytest.approx(row["bpb_base"] - row["bpb_ttt"])
    assert set(row["seconds"]) == {"model_s", "retrieval_s", "base_s", "ttt_s", "control_s"}
    text = report.read_text()
    assert "gpt-0.4m" in text and "0.07 bits per byte" in text and "Not in this study" in text
    assert {s["subset"] for s in row["subsets"]} <= set(TOPICS)
    assert sum(s["n_docs"] for s in row["subsets"]) == 4 and "## Per subset" in text
    gain = f"{row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}]"
    assert f"| {gain} |" in text and "points" not in text  # bits per byte, not accuracy points
    # a second run finds the unit written and the model cached
    again = run_study(study)
    assert (again.folder, again.report, again.ran) == (folder, report, [])
    assert load_plan(folder).ttt == study.ttt


def test_the_learning_rate_is_chosen_on_documents_never_scored(tmp_path):
    study = tiny_study(tmp_path, lr_grid=(1e-5, 3e-2), select_docs=2)
    folder = run_study(study).folder
    (row,) = collect(folder, study.units())
    assert set(row["lr_selection"]) == {"1e-05", "0.03"}
    best = min(row["lr_selection"], key=row["lr_selection"].get)
    assert row["lr"] == float(best) and row["lr"] in (1e-5, 3e-2)
    chosen, validation = scored_documents(load_corpus(study.study.corpus), study.study)
    assert len(chosen) == 4 and len(validation) == 2 and not set(chosen) & set(validation)


def test_the_cli_runs_shards_and_reports(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    args = ["study", "lm-size", "--corpus", str(corpus), "--sizes", "0.4m", "--docs", "2",
            "--out", str(tmp_path / "runs"), "--tokens", "1024", "--seq", "32", "--batch", "4",
            "--vocab", "300", "--k", "2", "--encoder", "tfidf", "--tfidf-dims", "4",
            "--n-boot", "50", "--no-progress", "--pretrained", "--lr-grid", "--tunes", "all",
            "--tokens-per-parameter", "0"]  # fmt: skip
    assert main([*args, "--shard-id", "1", "--num-shards", "2"]) == 0  # shard 1 holds no unit
    assert "still missing (other shards): 1" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "report:" in out
    folder = out.split("study: ")[1].split()[0]
    assert main(["study", "status", folder]) == 0
    assert "done: 1" in capsys.readouterr().out
    assert main(["study", "report", folder]) == 0
    assert main(["study", "resume", folder]) == 0
    assert "units run now: 0, already done: 1" in capsys.readouterr().out


def test_a_task_elsewhere_writes_the_unit_a_local_run_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    study = tiny_study(tmp_path)
    study.study.corpus, study.options.out = "corpus", "runs"
    local = run_study(study)
    (row,) = collect(local.folder, study.units())
    unit_file(local.folder, study.units()[0]).unlink()
    # A worker or a Slurm task gets a pickled copy and starts in another folder.
    task = pickle.loads(pickle.dumps(study_task(study, local.folder, threads=1)))
    monkeypatch.chdir(tmp_path / "corpus")
    assert task([GPT04]) == [GPT04]
    monkeypatch.chdir(tmp_path)
    (again,) = collect(local.folder, study.units())
    assert again["per_doc"] == row["per_doc"] and again["lr"] == row["lr"]


def test_resume_runs_only_the_missing_units_in_local_workers(tmp_path):
    study = tiny_study(tmp_path, sizes=("0.4m", "1.5m"))
    done = run_study(study)
    rows = {r["model"]: r for r in collect(done.folder, study.units())}
    unit_file(done.folder, study.units()[1]).unlink()
    assert study_progress(study, done.folder).missing == ["model=gpt-1.5m,seed=0,tune=all,steps=1"]
    resumed = resume_study(load_plan(done.folder), done.folder, SlurmConfig(workers=2))
    assert resumed.ran == ["model=gpt-1.5m,seed=0,tune=all,steps=1"] and resumed.report is not None
    again = {r["model"]: r for r in collect(done.folder, study.units())}
    assert again["gpt-1.5m"]["per_doc"] == rows["gpt-1.5m"]["per_doc"]


def test_bad_settings_fail_before_any_training(tmp_path):
    study = tiny_study(tmp_path)
    study.study.docs = 7
    with pytest.raises(ValueError, match="holds 6 test documents"):
        run_study(study)
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder opened
    study.study.docs, study.ttt.k = 2, 25
    with pytest.raises(ValueError, match="the pool has 24 documents"):
        run_study(study)
    with pytest.raises(ValueError, match="size"):
        LMStudyConfig(sizes=("7b",))
    study.ttt.k = 2
    with pytest.raises(ValueError, match="device='tpu' is not supported"):
        LMStudyConfig(device="tpu")
    with pytest.raises(ValueError, match="drop one of the two"):
        run_study(study, SlurmConfig(executor="slurm"), ShardConfig(0, 2))
    assert not (tmp_path / "runs").exists()
    with pytest.raises(FileNotFoundError, match="tttlab lm corpus --out"):
        run_study(LMPlan(LMStudyConfig(corpus=str(tmp_path / "nowhere"))))


def test_summary_gains_are_paired_differences_in_bits_per_byte():
    n_bytes = np.array([100, 200, 100])
    base, after, control = (
        np.array([300.0, 500, 250]),
        np.array([250.0, 480, 240]),
        np.array([290.0, 500, 250]),
    )
    row = summarise(n_bytes, {"base": base, "ttt": after, "control": control}, n_boot=100)
    assert row["bpb_base"] == pytest.approx(np.mean([3.0, 2.5, 2.5]))
    assert row["gain"] == pytest.approx(np.mean([0.5, 0.1, 0.1]))
    assert row["control_gain"] == pytest.approx(np.mean([0.1, 0.0, 0.0]))
    assert row["ttt_vs_control"] == pytest.approx(row["gain"] - row["control_gain"])
    assert row["gain_low"] <= row["gain"] <= row["gain_high"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_study_on_cuda_gives_the_cpu_numbers(tmp_path):
    rows = {}
    for device in ("cpu", "cuda"):
        study = tiny_study(tmp_path / device, device=device)
        (rows[device],) = collect(run_study(study).folder, study.units())
    for m in ("base", "ttt", "control"):
        np.testing.assert_allclose(rows["cuda"]["per_doc"][m], rows["cpu"]["per_doc"][m], rtol=1e-3)


def test_ladder_seeds_are_units_and_the_report_says_whether_bpb_falls(tmp_path):
    study = tiny_study(tmp_path, sizes=("0.4m", "1.5m"), seeds=(0, 1))
    assert [u.id for u in study.units()] == [
        f"model=gpt-{m},seed={s},tune=all,steps=1" for m in ("0.4m", "1.5m") for s in (0, 1)
    ]
    done = run_study(study)
    rows = collect(done.folder, study.units())
    assert rows[0]["per_doc"]["base"] != rows[1]["per_doc"]["base"]  # two seeds, two models
    text = done.report.read_text()
    means = [
        np.mean([r["bpb_base"] for r in rows if r["model"] == m]) for m in ("gpt-0.4m", "gpt-1.5m")
    ]
    said = "falls at every step" if means[1] < means[0] else "does NOT fall at every step"
    assert said in text and "t 95%" in text


def tiny_llama(hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from .test_lora import as_lm

    torch.manual_seed(hidden)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False)  # fmt: skip
    lm = as_lm(LlamaForCausalLM(config), f"llama-{hidden}")
    lm.context = 512
    return lm


@pytest.fixture
def stand_ins(monkeypatch):
    """Tiny transformers models in place of the Qwen pair's GGUF files."""
    pytest.importorskip("peft")
    models = {"qwen2.5-coder-0.5b": tiny_llama(16, 1), "qwen2.5-coder-1.5b": tiny_llama(32, 2)}
    monkeypatch.setattr(study_mod, "gguf_path", lambda name: (name, None))
    monkeypatch.setattr(study_mod, "gguf_header", lambda path: {"width": 16 if "0.5" in path
                                                                else 32})  # fmt: skip
    monkeypatch.setattr(study_mod, "_pretrained", lambda name, device: models[name])
    return models


def test_the_qwen_pair_lora_and_the_last_blocks_give_the_headline_and_their_comparison(
    tmp_path, stand_ins
):
    study = tiny_study(tmp_path, sizes=(), pretrained=tuple(stand_ins), tunes=("lora", "last"),
                       lora_ranks=(2, 4))  # fmt: skip
    study.ttt.lr = 1e-2
    names = [u.id for u in study.units()]
    assert names[:3] == ["model=qwen2.5-coder-0.5b,tune=lora,rank=2,steps=1",
                         "model=qwen2.5-coder-0.5b,tune=lora,rank=4,steps=1",
                         "model=qwen2.5-coder-0.5b,tune=last,steps=1"]  # fmt: skip
    done = run_study(study)
    rows = collect(done.folder, study.units())
    assert {r["tune"] for r in rows} == {"lora", "last"} and all(r["n_docs"] == 4 for r in rows)
    text = done.report.read_text()
    assert "gain 0.5B - gain 1.5B" in text and "Qwen2.5-Coder 0.5B to 1.5B (lora r2" in text
    assert "| LoRA - last |" in text and "| rank 2 | rank 4 |" in text


def test_lora_settings_the_models_cannot_take_are_refused_before_the_folder(tmp_path, stand_ins):
    study = tiny_study(tmp_path, sizes=(), pretrained=tuple(stand_ins), tunes=("lora",),
                       lora_ranks=(8, 24))  # fmt: skip
    with pytest.raises(ValueError, match="--lora-ranks holds 24, above qwen2.5-coder-0.5b's width"):
        run_study(study)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="leaves the ladder nothing to train"):
        LMStudyConfig(tunes=("lora",))
    with pytest.raises(ValueError, match="--seeds is empty"):
        LMStudyConfig(seeds=())
