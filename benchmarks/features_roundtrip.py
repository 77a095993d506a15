"""A real embedding file read back through --features gives the in-memory path's numbers.

    python benchmarks/features_roundtrip.py               # Fashion-MNIST, the d = 25 CNN
    python benchmarks/features_roundtrip.py --limit 2000  # a quick look
    python benchmarks/features_roundtrip.py --out runs    # reuse a cache that has the CNN

Trains (or finds in the cache) the d = 25 CNN on Fashion-MNIST and scores global, TTT and
majority vote in memory. Then writes its train/val/test features to `.npy` files, its last layer
to a linear-head checkpoint, and runs the same methods from those files with
`--features ... --model linear --checkpoint ...`. Prints both tables and whether every test
point's prediction agrees.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import LinearHead, save_model
from tttlab.pipeline import evaluate, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="results and cache root (default: temp)")
    parser.add_argument("--limit", type=int, default=None, help="points per split (default all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        cfg = Config(
            data=DataConfig(limit=args.limit),
            model=ModelConfig(model="cnn", width=25),
            run=RunConfig(out=str(out), progress=False),
        )
        start = time.perf_counter()
        in_memory = evaluate(cfg)
        p = prepare(cfg)
        print(f"in memory ({time.perf_counter() - start:.1f} s):\n{in_memory.table}\n")

        files = Path(tmp) / "files"
        files.mkdir()
        for split in ("train", "val", "test"):
            np.save(files / f"{split}_embeddings.npy", getattr(p.features, split))
            np.save(files / f"{split}_labels.npy", getattr(p.splits, f"{split}_y").numpy())
        head = LinearHead(p.model.classifier.in_features, p.model.classifier.out_features)
        head.classifier.load_state_dict(p.model.classifier.state_dict())
        ckpt = save_model(head, files / "head.safetensors",
                          {"kind": "linear", "dataset": "train_embeddings.npy"})  # fmt: skip
        data = DataConfig(
            features=str(files / "train_embeddings.npy"),
            val_features=str(files / "val_embeddings.npy"),
            test_features=str(files / "test_embeddings.npy"),
        )
        from_file_cfg = Config(
            data=data,
            model=ModelConfig(model="linear", checkpoint=str(ckpt)),
            ttt=cfg.ttt,
            methods=cfg.methods,
            run=RunConfig(out=str(Path(tmp) / "from-file"), progress=False),
        )
        start = time.perf_counter()
        from_file = evaluate(from_file_cfg)
        print(f"from the files ({time.perf_counter() - start:.1f} s):\n{from_file.table}\n")
        for m in cfg.methods.methods:
            same = np.array_equal(in_memory.points.pred[m], from_file.points.pred[m])
            a = in_memory.metrics["methods"][m]["accuracy"]
            b = from_file.metrics["methods"][m]["accuracy"]
            print(f"{m:<9} in memory {100 * a:6.2f}%  from file {100 * b:6.2f}%  "
                  f"every prediction equal: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
