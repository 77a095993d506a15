"""Presets: the paper's settings ship in the package as typed rows; a user's file is checked."""

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig, cnn_shape, scale_for_width
from tttlab.presets import (
    LAPTOP_WIDTHS,
    ExpertSettings,
    MLPHeadSettings,
    WidthSettings,
    expert_settings,
    mlp_head_settings,
    paper_config,
    read_expert_settings,
    read_mlp_head_settings,
    read_width_settings,
    reported,
    sae_config,
    settings_for,
    width_settings,
    write_settings,
)
from tttlab.ttt import TTTConfig

ROOT = Path(__file__).resolve().parents[2]
# CI keeps shared/ beside the repository; a worktree may sit one folder deeper.
SHARED = next(
    (p / "shared" / "paper" for p in ROOT.parents if (p / "shared" / "paper").is_dir()), None
)
needs_shared = pytest.mark.skipif(SHARED is None, reason="no shared/paper beside the repository")


def test_the_paper_preset_holds_the_authors_27_widths_as_typed_rows():
    table = width_settings()
    assert len(table) == 27 and min(table) == 25 and max(table) == 1152
    d192 = table[192]
    assert d192 == WidthSettings(192, 1.0, 0.0008, 100, 50, 0.01, 50, 200, 3)
    assert isinstance(d192.size_scale, float) and isinstance(d192.ttt_k, int)


@pytest.mark.parametrize("row", width_settings().values(), ids=lambda r: f"d{r.feature_width}")
def test_each_paper_width_is_what_the_cnn_code_builds_at_its_size_scale(row):
    assert cnn_shape(row.size_scale).feature_width == row.feature_width
    assert scale_for_width(row.feature_width) == row.size_scale


def test_the_other_tables_and_files_load():
    experts = expert_settings()
    assert list(experts)[:3] == [1, 3, 10] and experts[50000] == ExpertSettings(50000, 20, 4e-4, 40)
    heads = mlp_head_settings()
    assert heads[250] == MLPHeadSettings(250, 4e-4, 0.0, 450, 50, 0.05)
    assert sae_config()["k"] == 16 and sae_config()["feature_dim"] == 512
    paper = reported()
    assert "2509.24510" in paper["source"]
    assert paper["accuracy"]["ttt"]["mnist"] == {"mean": 99.01, "pm": 0.10}


@needs_shared
@pytest.mark.parametrize(
    "name, load",
    [
        ("mnist_cnn_widths.csv", width_settings),
        ("mnist_experts.csv", expert_settings),
        ("imagenet_mlp_heads.csv", mlp_head_settings),
    ],
)
def test_shipped_tables_match_shared_paper(name, load):
    with open(SHARED / name, newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    assert [dataclasses.asdict(r) for r in load().values()] == rows


@needs_shared
def test_shipped_sae_config_matches_shared_paper():
    assert sae_config() == json.loads((SHARED / "sae_config.json").read_text())


@needs_shared
def test_reported_numbers_match_the_readme_table():
    readme = (SHARED / "README.md").read_text()
    for row in reported()["accuracy"].values():
        line = next(x for x in readme.splitlines() if x.startswith(f"| {row['label']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        for cell, where in zip(cells, ("mnist", "imagenet_clip_linear"), strict=True):
            mean, _, pm = cell.partition(" ± ")
            assert row[where] == {"mean": float(mean), "pm": float(pm) if pm else None}
    sae = reported()["sae_clip_imagenet"]
    for number in ("masked_accuracy", "own_16_concepts_accuracy"):
        assert f"{sae[number]:.2f}%" in readme


def test_a_width_row_converts_to_the_config_tree():
    d25 = width_settings()[25]
    assert d25.train_config() == TrainConfig(lr=0.006, batch_size=500, epochs=50, stop="epochs")
    assert d25.ttt_config(TTTConfig(method="sequential")) == TTTConfig(
        k=200, lr=0.05, epochs=50, method="sequential"
    )
    cfg = d25.config(Config(data=DataConfig(dataset="mnist")))
    assert (cfg.data.dataset, cfg.model.model, cfg.model.width) == ("mnist", "cnn", 25)
    assert (cfg.ttt.k, cfg.majority_k, cfg.train.lr) == (200, 8, 0.006)


def test_expert_and_mlp_rows_convert_to_the_config_tree():
    assert expert_settings()[10].ttt_config() == TTTConfig(k=30, lr=6e-4, epochs=2)
    head = mlp_head_settings()[4000]
    assert head.train_config() == TrainConfig(
        lr=4.5e-4, weight_decay=0, batch_size=650, epochs=50, stop="epochs"
    )
    model = head.model_config()
    assert (model.model, model.hidden, model.dropout) == ("mlp", 4000, 0.7)


def test_the_paper_preset_runs_the_authors_protocol():
    cfg = paper_config(Config(model=ModelConfig(width=50), run=RunConfig(seed=2, split_seed=3)))
    assert (cfg.train.stop, cfg.train.epochs, cfg.train.lr, cfg.ttt.k) == ("epochs", 50, 0.002, 50)
    assert (cfg.run.seed, cfg.run.split_seed, cfg.experts.kmeans_restarts) == (2, 0, 20)
    assert cfg.data.pixel_stats == ()  # Fashion-MNIST: the split's own statistics
    mnist = paper_config(Config(data=DataConfig(dataset="mnist")))
    assert mnist.data.pixel_stats == (0.1307, 0.3081)
    head = paper_config(Config(data=DataConfig(features="clip.npz"), model=ModelConfig("linear")))
    assert head.train.stop == "epochs" and head.train == dataclasses.replace(
        TrainConfig(), stop="epochs"
    )  # a head takes the paper's stopping rule; its own settings come from the head tables


def test_the_laptop_widths_span_the_paper_table():
    assert len(LAPTOP_WIDTHS) == 8 and (LAPTOP_WIDTHS[0], LAPTOP_WIDTHS[-1]) == (25, 1152)
    assert list(settings_for(LAPTOP_WIDTHS)) == list(LAPTOP_WIDTHS)


def test_settings_for_refuses_a_width_the_table_lacks():
    with pytest.raises(ValueError, match=r"no settings for \[576\].*it has \[25, 50, 64"):
        settings_for([25, 576])
    assert list(settings_for([3, 1], expert_settings())) == [3, 1]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".yaml"])
@pytest.mark.parametrize(
    "load, read",
    [
        (width_settings, read_width_settings),
        (expert_settings, read_expert_settings),
        (mlp_head_settings, read_mlp_head_settings),
    ],
)
def test_tables_round_trip_through_csv_json_and_yaml(tmp_path, suffix, load, read):
    path = tmp_path / f"mine{suffix}"
    write_settings(load(), path)
    assert read(path) == load()


def test_yaml_reads_1e_3_as_a_number_not_a_string(tmp_path):
    path = tmp_path / "experts.yml"
    path.write_text("- {experts: 4, k: 20, lr: 1e-3, epochs: 5}\n")
    assert read_expert_settings(path) == {4: ExpertSettings(4, 20, 0.001, 5)}


# ---- bad input: each message names the file, the row and the fix ----------------------------


def paper_rows() -> list[dict]:
    return [dataclasses.asdict(r) for r in width_settings().values()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text(yaml.safe_dump(rows))
    return path


def edited(change) -> list[dict]:
    rows = paper_rows()
    change(rows)
    return rows


def rename(old, new):
    return lambda rows: [r.__setitem__(new, r.pop(old)) for r in rows]


def setcell(i, column, value):
    return lambda rows: rows[i].__setitem__(column, value)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".yaml"])
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: [r.pop("ttt_k") for r in rows], r"missing column\(s\) ttt_k"),
        (rename("ttt_lr", "tt_lr"), r"unknown column\(s\) 'tt_lr' \(did you mean 'ttt_lr'\?\)"),
        (setcell(2, "feature_width", 65), "no size_scale gives feature width 65"),
        (setcell(3, "size_scale", 0.6), "size_scale 0.6 gives feature width 64 "),
        (setcell(1, "ttt_k", 2.5), r"ttt_k.*integer, got '?2.5"),
        (lambda rows: rows.append(dict(rows[0])), r"feature_width 25 appears twice \((line|row)"),
        (setcell(0, "ttt_lr", 0), "ttt_lr must be a number > 0, got 0"),
        (setcell(0, "global_lr", -0.1), "global_lr must be a number > 0"),
        (setcell(0, "majority_k", 0), "majority_k must be an integer >= 1, got 0"),
    ],
    ids=["missing", "unknown", "unreachable", "disagree", "type", "dup", "lr0", "lr<0", "k0"],
)
def test_bad_width_files_are_refused_naming_file_and_problem(tmp_path, suffix, change, message):
    path = write_rows(tmp_path / f"widths{suffix}", edited(change))
    with pytest.raises(ValueError, match=message) as err:
        read_width_settings(path)
    assert str(path) in str(err.value)


def test_an_unreachable_width_names_the_nearest_reachable_ones(tmp_path):
    path = write_rows(tmp_path / "w.csv", edited(setcell(2, "feature_width", 65)))
    with pytest.raises(ValueError, match=r"line 4 \(feature_width=65\).*\[48, 50, 64, 80\]"):
        read_width_settings(path)


def test_a_size_scale_the_code_reads_differently_says_which_scale_fits(tmp_path):
    path = write_rows(tmp_path / "w.json", edited(setcell(3, "size_scale", 0.6)))
    with pytest.raises(ValueError, match=r"row 4 .*disagree; width 80 comes from size_scale 0.65"):
        read_width_settings(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("e.csv", "experts,k,lr,epochs\n3,50,fast,1\n", "line 2, column lr: expected a number, "),
        ("e.csv", "experts,k,lr,epochs\n3,50,,1\n", "expected a number, got an empty cell"),
        ("e.csv", "experts,k,lr,epochs\n3.0,50,0.1,1\n", "column experts: expected an integer"),
        ("e.csv", "experts,k,lr,epochs\n3,50,0.1,1,9\n", "more cells than the header's 4"),
        ("e.csv", "experts,k,lr,epochs\n", "has no rows"),
        ("e.json", '[{"experts": 3, "k": "50", "lr": 0.1, "epochs": 1}]', "k must be an integer"),
        ("e.json", '[{"experts": true, "k": 5, "lr": 0.1, "epochs": 1}]', "experts must be an"),
        ("e.json", '{"experts": 3}', "must hold a list of rows"),
        ("e.json", "[{", "is not valid JSON"),
        ("e.yaml", "- {experts: 3, k: 0, lr: 0.1, epochs: 1}\n", "k must be an integer >= 1"),
        ("e.yaml", "- [1, 2]\n", "must hold a list of rows"),
        ("e.txt", "", "unknown file type '.txt'; name it .csv, .json, .yaml or .yml"),
    ],
)
def test_bad_expert_files_are_refused_naming_file_and_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        read_expert_settings(path)
    assert str(path) in str(err.value)


def test_a_missing_file_and_an_unknown_preset_are_named(tmp_path):
    with pytest.raises(ValueError, match="no parameter file at .*nope.yaml: check the path"):
        read_mlp_head_settings(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown preset 'papers'; did you mean 'paper'?"):
        width_settings("papers")


def test_dropout_of_one_is_refused():
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        MLPHeadSettings(250, 4e-4, 0.0, 450, 50, 1.0)
