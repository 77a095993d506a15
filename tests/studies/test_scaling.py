"""The scaling studies end to end on small data: units, resuming, shards, the report."""

import json

import pytest

from tttlab.cli import main
from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.studies import collect
from tttlab.studies.config import (
    DatasetSizeConfig,
    ExpertsStudyConfig,
    GlobalEvalConfig,
    ModelSizeConfig,
    ShardConfig,
    StudyOptions,
)
from tttlab.studies.plan import default_folder, run_study
from tttlab.studies.scaling import DatasetSizePlan, ExpertsPlan, GlobalEvalPlan, ModelSizePlan
from tttlab.ttt import TTTConfig


def digits_base(tmp_path) -> Config:
    return Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=5, lr=0.05),
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50),
    )


def options(tmp_path, **kw) -> StudyOptions:
    return StudyOptions(out=str(tmp_path), progress=False, **kw)


def fractions(tmp_path, values, seeds=(0,), base=None, **kw) -> DatasetSizePlan:
    study = DatasetSizeConfig(fractions=values, seeds=seeds)
    return DatasetSizePlan(study, base or digits_base(tmp_path), options(tmp_path, **kw))


def test_a_dataset_size_study_runs_resumes_and_reports(tmp_path):
    plan = fractions(tmp_path, (0.1, 0.5, 1.0), seeds=(0, 1))
    done = run_study(plan)
    assert len(done.ran) == 6 and not done.missing
    rows = collect(done.folder, plan.units())
    sizes = [r["n_train"] for r in rows if r["seed"] == 0]
    assert sizes == sorted(sizes) and sizes[-1] == 1078, "nested fractions of digits' 1078"
    assert all(0 <= r["acc_ttt"] <= 1 and "gain" in r for r in rows)
    report = done.report.read_text()
    assert "dataset-size" in report and "plot.png" in report
    assert (done.folder / "plot.png").stat().st_size > 1000
    again = run_study(fractions(tmp_path, (0.1, 0.5, 1.0), seeds=(0, 1)))
    assert again.ran == [] and len(again.skipped) == 6 and again.folder == done.folder


def test_shards_write_the_same_units_as_one_run(tmp_path):
    one = run_study(fractions(tmp_path / "one", (0.2, 1.0)))
    for shard in range(3):
        part = run_study(fractions(tmp_path / "three", (0.2, 1.0)), shard=ShardConfig(shard, 3))
    assert part.report is not None
    for unit in fractions(tmp_path, (0.2, 1.0)).units():
        name = f"units/{unit.id}.json"
        assert (one.folder / name).read_bytes() == (part.folder / name).read_bytes()


def test_a_study_folder_refuses_other_settings(tmp_path):
    run_study(fractions(tmp_path, (0.5,), folder=str(tmp_path / "study")))
    other = digits_base(tmp_path)
    other.ttt.lr = 0.5
    with pytest.raises(ValueError, match="ttt.lr"):
        run_study(fractions(tmp_path, (0.5,), base=other, folder=str(tmp_path / "study")))


def test_a_folder_is_keyed_by_what_its_units_read_alone(tmp_path):
    base = digits_base(tmp_path)
    plan = ModelSizePlan(ModelSizeConfig(widths=(25, 50)), base, options(tmp_path))
    key = default_folder(plan)
    for other in (
        ModelSizeConfig(widths=(25, 50), hidden_widths=(7,)),  # the axis of feature files
        ModelSizeConfig(widths=(25, 50), k_grid=(5,)),  # read with --params select only
    ):
        assert default_folder(ModelSizePlan(other, base, options(tmp_path))) == key
    assert default_folder(ModelSizePlan(ModelSizeConfig(widths=(25,)), base, options(tmp_path)))
    assert (
        default_folder(ModelSizePlan(ModelSizeConfig(widths=(25,)), base, options(tmp_path))) != key
    )
    elsewhere = ModelSizePlan(ModelSizeConfig(widths=(25, 50)), base, options(tmp_path / "x"))
    assert default_folder(elsewhere).name == key.name, "where results go is not a setting"


def test_model_size_takes_per_width_settings_and_names_a_missing_width(tmp_path):
    params = tmp_path / "widths.json"
    row = {"size_scale": 0.35, "global_lr": 0.01, "global_batch_size": 64, "global_epochs": 1}
    row |= {"ttt_lr": 0.05, "ttt_epochs": 2, "ttt_k": 5, "majority_k": 3}
    params.write_text(json.dumps([{"feature_width": 25, **row}]))
    with pytest.raises(ValueError, match="50"):
        run_study(ModelSizePlan(ModelSizeConfig(widths=(25, 50), params=str(params)), Config()))


def test_the_paper_settings_say_which_given_flags_they_replace(capsys):
    from tttlab.cli import parse
    from tttlab.commands import make_plan, replaced_note

    plan = make_plan("model-size", parse("study model-size --k 10 --widths 25 50".split()))
    assert plan.replaced() == {"ttt.k": (10, 200)}, "d = 25's paper row has k = 200"
    note = replaced_note("model-size", plan, plan.replaced())
    assert "--params paper sets each unit's settings and replaces --k 10" in note
    assert "pass --params config" in note
    kept = "study model-size --k 10 --widths 25 50 --params config"
    assert make_plan("model-size", parse(kept.split())).replaced() == {}
    untouched = make_plan("model-size", parse("study model-size --widths 25".split()))
    assert untouched.replaced() == {}, "defaults are not 'given'"


def test_a_unit_that_would_run_for_hours_draws_a_warning_with_the_fixes(tmp_path, monkeypatch):
    from tttlab.studies import scaling

    monkeypatch.setattr(scaling, "probe_flops", lambda threads: 1e4)  # a very slow machine
    message = r"unit fraction=1.0,seed=0 needs about [\d.]+ hours on this machine .* --preset quick"
    with pytest.warns(UserWarning, match=message):
        fractions(tmp_path, (0.5, 1.0)).check()  # the largest unit is named
    monkeypatch.setattr(scaling, "probe_flops", lambda threads: 1e10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fractions(tmp_path, (0.5, 1.0)).check()


def test_an_interrupted_study_says_what_it_kept_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    from tttlab.studies import scaling

    real = scaling.evaluate
    calls = []

    def interrupted_after_one_unit(cfg):
        calls.append(cfg)
        if len(calls) >= 2:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(scaling, "evaluate", interrupted_after_one_unit)
    args = "study dataset-size --dataset digits --model linear --k 5 --ttt.epochs 2"
    args += f" --train.epochs 2 --n-boot 20 --no-progress --out {tmp_path} --fractions 0.5 1.0"
    assert main(args.split()) == 130
    err = capsys.readouterr().err
    folder = next((tmp_path / "studies").iterdir())
    assert f"{folder} keeps its 1 finished unit(s) of 2" in err
    assert f"`tttlab study resume {folder}` runs the other 1" in err
    assert main([*args.split(), "--shard-id", "1", "--num-shards", "2"]) == 130
    assert "the same command runs this shard's other units" in capsys.readouterr().err


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DatasetSizeConfig(fractions=(0.0,)), "fraction must be a number"),
        (lambda: DatasetSizeConfig(fractions=(1.5,)), "fraction must be a number"),
        (lambda: ModelSizeConfig(widths=()), "widths is empty"),
        (lambda: DatasetSizeConfig(seeds=(0, 0)), "repeats a value"),
        (lambda: ModelSizeConfig(widths=(25, 30)), r"nearby reachable widths: \[25, 32, 48, 50\]"),
    ],
)
def test_bad_study_settings_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_the_cli_runs_a_shard_then_reports(tmp_path, capsys):
    args = "study dataset-size --dataset digits --model linear --k 5 --ttt.epochs 2"
    args += f" --train.epochs 2 --n-boot 20 --no-progress --out {tmp_path} --fractions 0.5 1.0"
    assert main([*args.split(), "--shard-id", "0", "--num-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "still missing (other shards): 1" in out and "report:" not in out
    folder = next((tmp_path / "studies").iterdir())
    assert main(["study", "report", str(folder)]) == 2
    assert "not finished: fraction=1.0,seed=0" in capsys.readouterr().err
    assert main([*args.split(), "--shard-id", "1", "--num-shards", "2"]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["study", "report", str(folder)]) == 0
    assert main(["study", "dataset-size", "--fractions", "2", "--out", str(tmp_path)]) == 2
    assert "fraction must be a number" in capsys.readouterr().err


def test_an_experts_study_puts_the_mixture_beside_ttt(tmp_path):
    sc = ExpertsStudyConfig(experts=(1, 20, 200), params="config", expert_params="config")
    plan = ExpertsPlan(sc, digits_base(tmp_path), options(tmp_path))
    done = run_study(plan)
    rows = collect(done.folder, plan.units())
    assert [r["experts"] for r in rows] == [1, 20, 200]
    assert len({r["acc_ttt"] for r in rows}) == 1, "TTT and global are computed once (cached)"
    assert rows[-1]["acc_experts"] > rows[0]["acc_experts"]
    assert "experts" in done.report.read_text()


def test_more_experts_than_training_points_is_refused_before_training(tmp_path):
    sc = ExpertsStudyConfig(experts=(5000,), params="config", expert_params="config")
    with pytest.raises(ValueError, match="n_experts=5000 training points but the training pool"):
        run_study(ExpertsPlan(sc, digits_base(tmp_path), options(tmp_path)))
    assert not (tmp_path / "cache" / "model").exists()


def test_global_eval_scores_local_heads_on_their_neighbourhood_and_the_whole_test_set(tmp_path):
    sc = GlobalEvalConfig(points=12, block=5, params="config")
    base = digits_base(tmp_path)  # a converged global head: TTT must move far to specialise
    base.ttt = TTTConfig(k=10, epochs=20, lr=0.5)
    plan = GlobalEvalPlan(sc, base, options(tmp_path))
    done = run_study(plan)
    assert len(done.ran) == 3, "12 points in blocks of 5"
    blocks = collect(done.folder, plan.units())
    points = [p for b in blocks for p in b["points"]]
    assert len({p["point"] for p in points}) == 12
    local_near = sum(p["local_on_neighbourhood"] for p in points) / 12
    local_far = sum(p["local_on_test_set"] for p in points) / 12
    assert local_near > local_far, "a local head is a specialist"
    assert local_far < blocks[0]["global_on_test_set"]
    report = done.report.read_text()
    assert "a local head on the whole test set" in report and "plot.png" in report


def test_selection_on_validation_records_the_chosen_settings(tmp_path):
    from tttlab.studies.config import Grid
    from tttlab.studies.selection import select

    base = digits_base(tmp_path)
    base.run.out = str(tmp_path)
    grid = Grid(ks=(3, 10, 30), lrs=(0.01, 0.1), epochs=(2, 8), points=100)
    chosen, record = select(base, grid)
    assert (chosen.ttt.k, chosen.ttt.lr, chosen.ttt.epochs) == (
        record["selected_ttt_k"],
        record["selected_ttt_lr"],
        record["selected_ttt_epochs"],
    )
    assert chosen.ttt.k in grid.ks and chosen.majority_k in grid.ks
    assert 0.5 < record["val_acc_ttt"] <= 1 and record["val_points"] == 100
    again, same = select(base, grid)
    assert same == record, "seeded: the same choice every time"


def test_widths_past_the_papers_largest_take_its_settings():
    table = ModelSizeConfig(widths=(1152, 1472, 2432)).width_table()
    assert table[1472].ttt_k == table[1152].ttt_k and table[2432].global_lr == table[1152].global_lr
    assert table[1472].config(Config()).model.width == 1472  # a wider CNN, the 1152 settings


def rows(cis):
    """Model-size rows, one per (width, seed), with TTT's gain CI."""
    return [
        {"width": w, "seed": s, "gain": (lo + hi) / 2, "gain_low": lo, "gain_high": hi}
        for w, s, lo, hi in cis
    ]


def test_the_report_marks_the_width_from_which_the_gain_is_not_told_from_zero():
    from tttlab.studies.scaling import vanishing_width

    gone = rows([(25, 0, 0.03, 0.05), (192, 0, 0.01, 0.02), (1152, 0, -0.002, 0.004),
                 (2432, 0, -0.003, 0.002)])  # fmt: skip
    assert vanishing_width("width", gone) == 1152
    back = gone[:2] + rows([(1152, 0, -0.002, 0.004), (2432, 0, 0.001, 0.004)])
    assert vanishing_width("width", back) is None, "positive again at the largest width"
    one_seed = gone + rows([(2432, 1, 0.001, 0.003)])
    assert vanishing_width("width", one_seed) is None, "every seed's CI must contain 0"
    plan = ModelSizePlan(ModelSizeConfig(widths=(25, 192, 1152, 2432)), Config())
    text = plan.summary(gone)
    assert "From width = 1152 on, TTT's gain is no longer distinguishable from zero" in text
    assert "Widths [2432] lie past the paper's tuned widths" in text


def test_the_report_compares_with_the_simulators_crossover(tmp_path):
    from tttlab.studies.scaling import simulated_crossover

    lines = ["sweep,s,d2_over_d1,seed,err_global,err_ttt"]
    lines += [f"map,8,{r},0,{g},{t}" for r, g, t in
              [(0.1, 0.5, 0.2), (0.5, 0.3, 0.2), (0.9, 0.1, 0.15), (1.2, 0.0, 0.1)]]  # fmt: skip
    (tmp_path / "units.csv").write_text("\n".join(lines) + "\n")
    assert "from d2/d1 = 0.9 on (map sweep, s = 8)" in simulated_crossover(tmp_path)
    with pytest.raises(ValueError, match="has no units.csv"):
        simulated_crossover(tmp_path / "missing")


def test_a_simulation_folder_is_keyed_only_when_given(tmp_path):
    base = digits_base(tmp_path)
    plain = ModelSizePlan(ModelSizeConfig(widths=(25,)), base, options(tmp_path))
    assert "simulation" not in plain.settings()["study"]
    given = ModelSizePlan(ModelSizeConfig(widths=(25,), simulation="sim"), base, options(tmp_path))
    assert given.settings()["study"]["simulation"] == "sim"
