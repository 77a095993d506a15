"""The authors' protocols in the studies: seeds on a fixed split, the dataset-size study's head
protocol on a fixed backbone, and global-eval at chosen test points."""

import pytest
import torch

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import CNN
from tttlab.studies import collect
from tttlab.studies.config import DatasetSizeConfig, GlobalEvalConfig, StudyOptions
from tttlab.studies.plan import default_folder, run_study
from tttlab.studies.scaling import DatasetSizePlan, GlobalEvalPlan
from tttlab.ttt import TTTConfig


def digits(**data) -> Config:
    return Config(
        data=DataConfig(dataset="digits", **data),
        model=ModelConfig(model="linear"),
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50),
    )


def options(tmp_path) -> StudyOptions:
    return StudyOptions(out=str(tmp_path), progress=False)


def test_seeds_vary_the_model_on_the_fixed_split_unless_asked_to_vary_the_split(tmp_path):
    fixed = DatasetSizePlan(DatasetSizeConfig(seeds=(0, 1, 2)), digits(), options(tmp_path))
    assert [fixed.unit_config(u).run.split_seed for u in fixed.units()[:3]] == [0, 0, 0]
    assert [fixed.unit_config(u).run.seed for u in fixed.units()[:3]] == [0, 1, 2]
    both = DatasetSizePlan(
        DatasetSizeConfig(seeds=(0, 1, 2), vary_split=True), digits(), options(tmp_path)
    )
    assert [both.unit_config(u).run.split_seed for u in both.units()[:3]] == [0, 1, 2]
    assert default_folder(both) != default_folder(fixed)


def test_the_head_protocol_without_a_backbone_is_refused_before_the_folder(tmp_path):
    plan = DatasetSizePlan(DatasetSizeConfig(protocol="head"), digits(), options(tmp_path))
    with pytest.raises(ValueError, match="--protocol head trains a head on a fixed backbone"):
        run_study(plan)
    assert not (tmp_path / "studies").exists()


def test_each_protocol_keys_only_the_axis_it_reads(tmp_path):
    def key(**study):
        return default_folder(
            DatasetSizePlan(DatasetSizeConfig(**study), digits(), options(tmp_path))
        )

    assert key(per_class_sizes=(7,)) == key()  # the head protocol's axis, unread by model
    assert key(protocol="head", fractions=(0.5,)) == key(protocol="head")
    assert key(protocol="head") != key()


def fashion_backbone(tmp_path) -> str:
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    torch.manual_seed(0)
    path = tmp_path / "torch_global_classifier_mnist_ot-adam_lr0.005bs400_ne50.pth"
    torch.save(CNN(0.5).state_dict(), path)  # the authors' d = 50 reference CNN's layout
    return str(path)


def test_the_head_protocol_trains_heads_on_a_fixed_backbone_per_class(tmp_path):
    base = Config(
        data=DataConfig(limit=500),
        model=ModelConfig(backbone=fashion_backbone(tmp_path)),  # a linear head by default
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50),
    )
    study = DatasetSizeConfig(protocol="head", per_class_sizes=(10, 30), params="config")
    done = run_study(DatasetSizePlan(study, base, options(tmp_path)))
    rows = collect(done.folder, DatasetSizePlan(study, base, options(tmp_path)).units())
    assert [r["n_train"] for r in rows] == [100, 300] and rows[0]["feature_width"] == 50
    report = done.report.read_text()
    assert (
        "Protocol head (the authors' MNIST design): the backbone torch_global_classifier" in report
    )
    assert "vary the model on one fixed split" in report
    # The authors' settings: TTT's k = 80 needs 80 neighbours, more than 5 per class give.
    paper = DatasetSizeConfig(protocol="head", per_class_sizes=(5, 30))
    with pytest.raises(ValueError, match="ttt needs k=80 training points but the training pool"):
        run_study(DatasetSizePlan(paper, base, options(tmp_path / "paper")))


def test_global_eval_at_chosen_points_scores_them_on_the_whole_test_set(tmp_path):
    base = digits(test_index=(17, 5, 200))
    base.ttt = TTTConfig(k=10, epochs=20, lr=0.5)
    plan = GlobalEvalPlan(GlobalEvalConfig(block=2, params="config"), base, options(tmp_path))
    done = run_study(plan)
    blocks = collect(done.folder, plan.units())
    assert [p["point"] for b in blocks for p in b["points"]] == [17, 5, 200]
    assert len(blocks) == 2 and blocks[0]["global_on_test_set"] > 0.9  # all 360 test points
    beyond = GlobalEvalPlan(GlobalEvalConfig(params="config"), digits(test_index=(360,)),
                            options(tmp_path / "beyond"))  # fmt: skip
    with pytest.raises(ValueError, match=r"test_index \[360\] lies beyond the test set"):
        run_study(beyond)


def test_the_command_line_names_the_missing_backbone(tmp_path, capsys):
    from tttlab.cli import main

    args = f"study dataset-size --protocol head --dataset digits --model linear --out {tmp_path}"
    args = args.split()
    assert main(args) == 2
    assert "pass --backbone CHECKPOINT" in capsys.readouterr().err
