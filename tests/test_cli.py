"""The command line as a new user meets it: bad input gets a message and exit code, never a
traceback, and nothing half-written is left behind."""

import dataclasses
import errno

import numpy as np
import pytest
import torch

from tttlab.cli import main
from tttlab.models import make_head, save_model


class RunSettings:
    """A custom object: what a pickled .pt file may carry, and what tttlab never unpickles."""


QUICK = "ttt --dataset digits --model linear --k 10 --ttt.epochs 2 --train.epochs 2 --n-boot 20"


def cli(args: str, capsys) -> tuple[int, str]:
    code = main(args.split())
    return code, capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "runs").write_text("x")
    code, err = cli(f"{QUICK} --out {tmp_path / 'runs'}", capsys)
    assert code == 2 and "is a file, not a folder" in err


def test_a_read_only_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import os

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: str(p) != str(tmp_path) and real_access(p, mode)
    )
    code, err = cli(f"{QUICK} --out {tmp_path / 'runs'}", capsys)
    assert code == 2 and "is not writable" in err
    assert not (tmp_path / "runs").exists()


def test_a_data_dir_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "data").write_text("x")
    code, err = cli(f"ttt --data-dir {tmp_path / 'data'} --out {tmp_path / 'runs'}", capsys)
    assert code == 2 and "is a file, not a folder" in err


@pytest.mark.parametrize("kind", ["truncated", "pickled", "nan"])
def test_a_bad_checkpoint_gets_a_message_not_a_traceback(tmp_path, capsys, kind):
    head = make_head("linear", 64, 10)
    path = tmp_path / ("model.pt" if kind == "pickled" else "model.safetensors")
    if kind == "pickled":
        torch.save({"weights": head.state_dict(), "settings": RunSettings()}, path)
    else:
        if kind == "nan":
            with torch.no_grad():
                head.classifier.weight[0, 0] = float("nan")
        save_model(head, path, {"kind": "linear", "dataset": "digits"})
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:100])
    code, err = cli(f"{QUICK} --checkpoint {path} --out {tmp_path / 'runs'}", capsys)
    expected = {
        "truncated": "truncated or corrupt",
        "pickled": "tttlab loads weights only",
        "nan": "classifier.weight",
    }[kind]
    assert code == 2 and expected in err and "Traceback" not in err
    assert "weights_only=False" not in err
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_is_explained_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    real_save = np.save

    def full(path, *args, **kwargs):
        if str(path).endswith("scores.npy"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    code, err = cli(f"{QUICK} --no-progress --out {tmp_path}", capsys)
    assert code == 1 and "no space left" in err.lower() and "Traceback" not in err
    assert not any(p.name.startswith(".tmp") for p in tmp_path.rglob("*"))
    assert not (tmp_path / "runs.csv").exists()
    monkeypatch.setattr(np, "save", real_save)
    assert main(f"{QUICK} --no-progress --out {tmp_path}".split()) == 0, "the rerun resumes"


def test_interrupted_after_the_commit_says_where_the_run_is(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from tttlab.results import store

    real = store._rename_exact

    def rename_then_ctrl_c(*args, **kwargs):
        out = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(store, "_rename_exact", rename_then_ctrl_c)
    code, err = cli(f"{QUICK} --no-progress --out {tmp_path}", capsys)
    assert code == 130 and "interrupted after the run was written" in err
    assert len(list(tmp_path.glob("ttt-*"))) == 1 and (tmp_path / "runs.csv").is_file()


def test_help_shows_each_settings_docstring_under_plain_headings(capsys):
    assert main(["ttt", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Neighbours fine-tuned on per test point" in " ".join(out.split()) and "--ttt.lr" in out
    assert "\nTTT:\n" in out and "\nData:\n" in out and "(default: 50)" in out
    assert "--executor" not in out and "--shard-id" not in out, "no flag ttt does not read"
    assert "cfg.data" not in out


def test_every_command_parses_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from tttlab.cli import COMMANDS, parse, _all_commands\n"
        "for prog, command in _all_commands():\n"
        "    command.parser(prog, []).format_help()\n"
        "parse(['ttt', '--k', '5']); parse(['study', 'model-size', '--widths', '25'])\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "args, message",
    [
        ("ttt --noprogress", "booleans are switched off with --no-progress"),
        ("ttt --progress false", "--progress takes no value"),
        ("ttt --progress=false", "--progress takes no value"),
        ("ttt --normalize true", "--normalize takes no value"),
        ("ttt --epochs 3", "did you mean --train.epochs or --ttt.epochs?"),
        ("ttt --workers 2", "--workers is a flag of `tttlab simulate`, `tttlab study <kind>`"),
        ("study model-size --widths 25 --shard-id x", "invalid int value: 'x'"),
        ("sae train --features f.npy --epochs 0", "epochs must be an integer >= 1"),
        ("ttx", "did you mean `tttlab ttt`?"),
        ("study modelsize", "did you mean `tttlab study model-size`?"),
    ],
)
def test_a_mistyped_command_line_names_the_fix(args, message, capsys):
    assert main(args.split()) == 2
    assert message in capsys.readouterr().err


def test_the_commands_are_listed_without_arguments(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "study" in out and "simulate" in out


def test_feature_files_use_the_linear_head_by_default():
    from tttlab.cli import parse

    assert parse(["ttt", "--features", "f.npy"])["cfg"].model.model == "linear"
    assert parse(["ttt"])["cfg"].model.model == "cnn"


def test_an_interrupted_run_says_which_stages_it_kept(tmp_path, capsys, monkeypatch):
    from tttlab.pipeline import stages

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "neighbours", ctrl_c)  # after the model and its features
    code, err = cli(f"{QUICK} --no-progress --out {tmp_path}", capsys)
    assert code == 130
    assert "no run folder was written; the stages this run finished are cached" in err
    assert "(features, model)" in err
    monkeypatch.setattr(stages, "global_model", ctrl_c)  # a run that finishes no stage
    code, err = cli(f"{QUICK} --no-progress --out {tmp_path} --seed 1", capsys)
    assert "this run finished no stage, so the same command starts over" in err


def test_an_interrupted_sae_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    from tttlab.sae import runs

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    X = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.savez(tmp_path / "f.npz", embeddings=X, labels=np.arange(64) % 2)
    monkeypatch.setattr(runs, "train_sae", ctrl_c)
    code, err = cli(f"sae train --features {tmp_path / 'f.npz'} --out {tmp_path}", capsys)
    assert code == 130 and "no SAE folder was written" in err and "starts over" in err


def test_a_twin_run_reports_the_folder_its_twin_wrote(tmp_path, capsys, monkeypatch):
    """Two identical commands at once: the one that finishes second reports the first's folder."""
    from tttlab.results import store

    real = store.write_folder

    def twin_first(root, name, write, **kwargs):  # the twin renames its folder in first
        real(root, name, write, **kwargs)
        return real(root, name, write, **kwargs)

    monkeypatch.setattr(store, "write_folder", twin_first)
    assert main(f"{QUICK} --no-progress --out {tmp_path}".split()) == 0
    out = capsys.readouterr().out
    assert "a run with these settings finished first" in out
    assert len(list(tmp_path.glob("ttt-*"))) == 1


def test_a_run_records_its_threads_and_wait_policy(tmp_path):
    import json

    assert main(f"{QUICK} --no-progress --out {tmp_path} --threads 1".split()) == 0
    (folder,) = tmp_path.glob("ttt-*")
    env = json.loads((folder / "metrics.json").read_text())["environment"]
    assert env["threads"] == 1 and env["threads_chosen_by"] == "set"
    assert env["openmp_wait"]  # e.g. "OMP_WAIT_POLICY=PASSIVE (2.0 of 2 CPUs busy ...)"
    assert main(f"{QUICK} --no-progress --out {tmp_path} --threads 2".split()) == 0
    assert len(list(tmp_path.glob("ttt-*"))) == 1, "threads are not a setting of the result"


def test_a_huge_run_name_is_refused_without_repeating_it(tmp_path, capsys):
    import json

    (tmp_path / "run.json").write_text(json.dumps({"run": {"name": "x" * 1_000_000}}))
    code, err = cli(f"ttt --config {tmp_path / 'run.json'} --out {tmp_path}", capsys)
    assert code == 2 and "at most 100 characters" in err and len(err) < 400


def test_labels_in_the_billions_are_refused_without_allocating_them(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((400, 4)).astype(np.float32)
    y = np.repeat([0, 1_000_000_000, 2_000_000_000, 3_000_000_000], 100)
    np.savez(tmp_path / "f.npz", embeddings=X, labels=y)
    code, err = cli(f"ttt --features {tmp_path / 'f.npz'} --out {tmp_path}", capsys)
    assert code == 2 and "use classes up to 3000000000 but never [1, 2, 3" in err


def test_a_single_class_file_is_refused(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    np.savez(tmp_path / "f.npz", embeddings=X, labels=np.zeros(200, dtype=np.int64))
    code, err = cli(f"ttt --features {tmp_path / 'f.npz'} --out {tmp_path}", capsys)
    assert code == 2 and "hold one class only" in err


def test_embed_resolution_0_is_refused(capsys):
    code, err = cli("embed --dataset mnist --resolution 0 --out x", capsys)
    assert code == 2 and "resolution must be an integer >= 1, got 0" in err


# ---- presets: named settings from tttlab/presets, flags on top -------------------------------

NEEDS = {  # what a command cannot run without, beside its preset
    "embed": ["--dataset", "fashion-mnist", "--out", "feats"],
    "sae train": ["--features", "f.npy"],
    "sae analyse": ["--features", "f.npy", "--sae", "runs/sae-x"],
}


def _preset_commands() -> list[tuple[str, str]]:
    from tttlab.cli import _all_commands, presets_of

    return [
        (prog.removeprefix("tttlab "), name)
        for prog, _ in _all_commands()
        for name in presets_of(prog.removeprefix("tttlab "))
    ]


@pytest.mark.parametrize("command, preset", _preset_commands())
def test_every_preset_parses_and_sets_its_values(command, preset):
    from tttlab.cli import parse, presets_of

    parsed = parse([*command.split(), "--preset", preset, *NEEDS.get(command, [])])
    for section, values in presets_of(command)[preset]().items():
        assert _contains(dataclasses.asdict(parsed[section]), values), (command, section)


def _contains(tree: dict, values: dict) -> bool:
    return all(
        _contains(tree[k], v)
        if isinstance(v, dict)
        else tree[k] == (tuple(v) if isinstance(v, list) else v)
        for k, v in values.items()
    )


def test_the_quick_preset_covers_every_study_and_the_sae():
    commands = {command for command, preset in _preset_commands() if preset == "quick"}
    from tttlab.catalog import STUDY_KINDS

    kinds = {f"study {kind}" for kind in STUDY_KINDS if kind != "simulate"} | {"simulate"}
    assert kinds | {"sae train", "sae analyse"} <= commands


def test_flags_given_beside_a_preset_override_it():
    from tttlab.cli import parse

    parsed = parse("study model-size --preset quick --widths 25 --train.epochs 2".split())
    assert parsed["study"].widths == (25,) and parsed["study"].params == "config"
    assert parsed["base"].train.epochs == 2 and parsed["base"].data.limit == 3000


def test_the_papers_sae_recipe_is_a_preset():
    from tttlab.cli import parse

    parsed = parse("sae train --preset paper --features f.npy --k 8".split())
    assert parsed["sae"].expansion_factor == 8 and not parsed["sae"].subtract_decoder_bias
    assert parsed["train"].batch_size == 4096 and parsed["sae"].k == 8


def test_an_unknown_preset_is_refused_naming_the_commands_presets(capsys):
    assert main("study model-size --preset quik".split()) == 2
    err = capsys.readouterr().err
    assert "--preset quik is no preset of this command (did you mean quick?)" in err
    assert "quick: a small run of the task" in err
    assert main("runs --preset quick".split()) == 2
    assert "unrecognized arguments: --preset quick" in capsys.readouterr().err


def test_a_commands_help_lists_its_presets(capsys):
    assert main("sae train --help".split()) == 0
    out = capsys.readouterr().out
    assert "presets (--preset NAME" in out and "\n  paper: the paper's" in out
    assert "\n  quick: a small run" in out
