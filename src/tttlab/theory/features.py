"""A draw of the sparse-concept model as feature files, so any run or study reads simulated
features as it reads real ones (`--features pool.npz --test-features test.npz --model linear`),
with the draw's settings beside them for the theory's lines.

    folder = write_features(Sim(task="classification", outputs=10), "runs/sim")
    sim = read_sim(folder / "pool.npz")       # the Sim a feature file came from, or None
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tttlab.atomic import atomic_path, atomic_write_json
from tttlab.theory.concepts import Sim, generate

SIM_FILE = "sim.json"
"""The draw's settings, beside its feature files."""


def write_features(sim: Sim, folder: str | Path) -> Path:
    """pool.npz (the training points), test.npz and sim.json of `sim`'s draw in `folder`. Pool
    labels are the noisy classes (argmax of the noisy scores), test labels the noise-free ones
    (argmax of f), so test error measures how well f is recovered, as the theory's error does.
    Each file is written whole or not at all."""
    if sim.task != "classification":
        raise ValueError(
            f"task={sim.task!r}: feature files hold class labels, so draw with "
            "task='classification' (outputs = the classes)"
        )
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    draw = generate(sim)
    splits = (
        ("pool", draw.train, draw.train.labels_N),
        ("test", draw.test, draw.test.true_class_N),
    )
    for name, points, labels in splits:
        with atomic_path(folder / f"{name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, embeddings=points.psi_ND.astype(np.float32), labels=labels.astype(np.int64))
    atomic_write_json(folder / SIM_FILE, dataclasses.asdict(sim))
    return folder


def read_sim(features: str | Path) -> Sim | None:
    """The Sim whose draw a feature file holds (from sim.json beside it), or None."""
    path = Path(features).expanduser()
    record = (path if path.is_dir() else path.parent) / SIM_FILE
    if not record.is_file():
        return None
    return Sim(**json.loads(record.read_text(encoding="utf-8")))
