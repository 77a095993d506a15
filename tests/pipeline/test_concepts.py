"""Neighbours searched in an SAE's concept space (--space concepts --sae FOLDER): the same run as
in feature space but for where its neighbours come from, and the settings it refuses."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from tttlab.cli import parse
from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import memory, run
from tttlab.pipeline.runner import prepare
from tttlab.retrieval import RetrievalConfig
from tttlab.sae import SaeConfig, SaeTrainConfig, SparseCoder, train_run
from tttlab.ttt import TTTConfig


@pytest.fixture(scope="module")
def sae_and_features(tmp_path_factory):
    """A 16-wide feature file of sums of a few directions, and a tiny SAE trained on it."""
    tmp = tmp_path_factory.mktemp("concepts")
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(32, 16))
    idx = np.stack([rng.choice(32, 3, replace=False) for _ in range(400)])
    X = np.einsum("na,nad->nd", rng.uniform(0.5, 2, (400, 3)), directions[idx]).astype(np.float32)
    features = tmp / "feats.npz"
    np.savez(features, embeddings=X, labels=idx[:, 0] % 4)
    sae = SaeConfig(expansion_factor=4, k=4)
    train = SaeTrainConfig(epochs=3, batch_size=64, lr_warmup_steps=0, k_start=0)
    folder, _ = train_run(features, sae, train, out=tmp, progress=False)
    return str(folder), str(features)


def quick(tmp_path, features: str, sae: str | None = None, **model) -> Config:
    return Config(
        data=DataConfig(features=features, test_per_class=10, val_per_class=5),
        model=ModelConfig(**({"model": "linear", "hidden": 32} | model)),
        train=TrainConfig(epochs=10),
        retrieval=RetrievalConfig(space="concepts", sae=sae) if sae else RetrievalConfig(),
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50, progress=False, out=str(tmp_path)),
    )


def test_concept_neighbours_differ_while_the_global_head_stays(tmp_path, sae_and_features):
    sae, features = sae_and_features
    plain = run(quick(tmp_path, features))
    concepts = run(quick(tmp_path, features, sae))
    assert concepts.metrics["retrieval_space"] == {
        "space": "concepts",
        "input_of_last_layers": 1,
        "width": 64,  # the SAE's latents: 4 x 16
        "sae": sae,
    }
    assert "neighbours in concepts" in concepts.table
    assert concepts.reused["method:global"], "the global head does not read neighbours"
    acc = [r.metrics["methods"]["global"]["accuracy"] for r in (plain, concepts)]
    assert acc[0] == acc[1]
    found = [prepare(quick(tmp_path, features, s)).neighbours.indices for s in (None, sae)]
    assert not np.array_equal(*found)
    assert concepts.run_dir != plain.run_dir


def test_concept_codes_are_encoded_once_per_features_and_sae(tmp_path, sae_and_features):
    sae, features = sae_and_features
    first = prepare(quick(tmp_path, features, sae))
    again = prepare(quick(tmp_path, features, sae))
    assert again.space.entry.reused and again.space.entry.key == first.space.entry.key
    codes = np.asarray(first.space.train)
    assert codes.shape == (len(first.features.train), 64) and codes.dtype == np.float32
    assert ((codes != 0).sum(1) <= 4).all(), "k = 4 active concepts per row at most"


def test_an_sae_trained_on_unit_rows_encodes_unit_rows(tmp_path, sae_and_features):
    sae, features = sae_and_features
    unit = tmp_path / "unit-sae"
    shutil.copytree(sae, unit)
    settings = json.loads((unit / "settings.json").read_text())
    (unit / "settings.json").write_text(json.dumps(settings | {"normalize": True}))
    p = prepare(quick(tmp_path, features, str(unit)))
    rows = torch.nn.functional.normalize(torch.from_numpy(np.array(p.features.train)), dim=1)
    expect = SparseCoder.load(unit).codes(rows).numpy()
    np.testing.assert_allclose(p.space.train, expect, rtol=1e-5, atol=1e-6)


def test_an_sae_of_another_width_is_refused_naming_both(tmp_path, sae_and_features):
    sae, features = sae_and_features
    with pytest.raises(ValueError, match=r"width d=16, but this run's last layer takes d=32"):
        run(quick(tmp_path, features, sae, model="mlp"))  # the MLP's hidden layer: 32 wide


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"space": "concepts"}, r"sae is not set: pass --sae FOLDER"),
        ({"sae": "some-sae"}, r"space='tail': add --space concepts, or drop --sae"),
    ],
)
def test_an_sae_and_the_concept_space_come_together(settings, message):
    with pytest.raises(ValueError, match=message):
        RetrievalConfig(**settings)


def test_concepts_tune_the_last_layer_alone(tmp_path, sae_and_features):
    sae, features = sae_and_features
    cfg = replace(quick(tmp_path, features, sae, model="mlp"), ttt=TTTConfig(k=10, layers=2))
    with pytest.raises(ValueError, match=r"--layers 2 tunes 2 layers .* pass --layers 1"):
        run(cfg)
    assert not (tmp_path / "cache").exists(), "refused before any work"


def test_a_missing_sae_folder_is_refused_before_any_work(tmp_path, sae_and_features):
    _, features = sae_and_features
    with pytest.raises(ValueError, match=r"no such folder; pass the folder `tttlab sae train`"):
        run(quick(tmp_path, features, str(tmp_path / "nowhere")))


def test_runs_without_an_sae_keep_their_keys(sae_and_features):
    sae, features = sae_and_features
    assert "sae" not in Config().settings()["retrieval"]
    cfg = Config(retrieval=RetrievalConfig(space="concepts", sae=sae))
    assert cfg.settings()["retrieval"]["sae"] == sae
    assert cfg.settings()["inputs"]["retrieval.sae"], "the SAE folder's content is in the key"


def test_the_command_line_takes_the_concept_space():
    cfg = parse(["ttt", "--space", "concepts", "--sae", "runs/sae-0123456789"])["cfg"]
    assert (cfg.retrieval.space, cfg.retrieval.sae) == ("concepts", "runs/sae-0123456789")


def test_the_memory_estimate_counts_the_codes_searched(sae_and_features):
    sae, features = sae_and_features
    cfg = Config(data=DataConfig(features=features))
    plain = memory.estimate(cfg, n_train=100_000, n_test=1000, d_in=16, classes=4)
    cfg = Config(
        data=DataConfig(features=features), retrieval=RetrievalConfig(space="concepts", sae=sae)
    )
    coded = memory.estimate(cfg, n_train=100_000, n_test=1000, d_in=16, classes=4)
    assert coded.parts["concepts"] == 4 * 100_000 * 64  # dense float32 codes, 64 latents
    assert coded.parts["search"] > plain.parts["search"]
