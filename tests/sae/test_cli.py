"""`tttlab sae train` and `tttlab sae analyse` as a user runs them."""

import json

import numpy as np
import pytest

from tttlab.cli import main
from tttlab.keys import folder_name, settings_digest

TRAIN = "--epochs 3 --batch-size 200 --expansion-factor 4 -k 3 --k-start 8 --no-progress"
ANALYSE = "--points 30 --k 10 --ttt-epochs 3 --head-epochs 2 --n-boot 20 --no-progress"


@pytest.mark.slow
def test_train_then_analyse_writes_run_folders(feature_file, tmp_path, capsys):
    path, X, y = feature_file
    out = tmp_path / "runs"
    assert main(f"sae train --features {path} {TRAIN} --out {out}".split()) == 0
    (folder,) = out.glob("sae-*")
    assert {"cfg.json", "sae.safetensors", "history.csv", "metrics.json", "training.png",
            "report.md"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    assert "FVU" in capsys.readouterr().out
    settings = json.loads((folder / "settings.json").read_text())
    assert folder.name == folder_name("sae", settings_digest(settings))  # named by its settings
    assert main(f"sae train --features {path} {TRAIN} --out {out}".split()) == 0
    assert "already trained" in capsys.readouterr().out  # same settings: the same folder

    code = main(f"sae analyse --sae {folder} --features {path} {ANALYSE} --out {out}".split())
    assert code == 0
    (report,) = out.glob("sae-analyse-*")
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["points"] == 30 and "ttt_codes_learned" in metrics["accuracy"]
    assert (report / "analyses.png").stat().st_size > 0
    assert "Local sparsity" in capsys.readouterr().out


def test_bad_input_gets_a_message_naming_the_file_and_the_fix(feature_file, tmp_path, capsys):
    path, X, y = feature_file
    out = tmp_path / "runs"
    code = main(f"sae train --features {path} -k 99 --expansion-factor 2 --out {out}".split())
    assert code == 2
    err = capsys.readouterr().err
    assert "feats.npz" in err and "k=99 is larger than the SAE's 32 latents" in err
    main(f"sae train --features {path} {TRAIN} --out {out}".split())
    (folder,) = out.glob("sae-*")
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, embeddings=X[:, :5], labels=y)
    code = main(f"sae analyse --sae {folder} --features {narrow} --out {out}".split())
    assert code == 2
    assert "narrow.npz has features of width d=5 but the SAE was trained on d=16" in (
        capsys.readouterr().err
    )
    assert not list(out.glob("sae-analyse-*")) and not list(out.glob(".tmp-*"))


def test_the_analysis_modules_import_neither_the_cli_nor_torch_for_their_settings():
    """Settings load without torch (the command line builds its parser from them), and the
    analyses never reach up into the command line."""
    import subprocess
    import sys

    code = (
        "import sys; import tttlab.sae.config; assert 'torch' not in sys.modules; "
        "import tttlab.sae.runs, tttlab.sae.report; assert 'tttlab.sae.cli' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_features_replaced_in_place_train_a_new_sae(feature_file, tmp_path, capsys):
    path, X, y = feature_file
    out = tmp_path / "runs"
    assert main(f"sae train --features {path} {TRAIN} --out {out}".split()) == 0
    np.savez(path, embeddings=X[::-1].copy(), labels=y[::-1].copy())  # same rows, other order
    assert main(f"sae train --features {path} {TRAIN} --out {out}".split()) == 0
    assert "already trained" not in capsys.readouterr().out
    assert len(list(out.glob("sae-*"))) == 2


def test_more_latents_than_the_rows_can_feed_draws_a_warning(feature_file, tmp_path):
    path, X, _ = feature_file
    args = f"sae train --features {path} --epochs 1 --num-latents 1000 -k 3 --k-start 8"
    message = f"1,000 latents on {len(X):,} training rows .* --num-latents 240"  # 5 rows each
    with pytest.warns(UserWarning, match=message):
        assert main(f"{args} --no-progress --out {tmp_path}".split()) == 0
