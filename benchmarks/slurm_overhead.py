"""What a Slurm job array costs per unit: the same small study run in this process, in a local
pool of processes, and as a job array, each from a fresh cache, timed in one run.

Needs a Slurm cluster and submitit (`.ci/run` and `../shared/slurm/` start a one-node one). Prints
each executor's wall time, the extra wall time per unit against this process, the Slurm tasks'
own mean elapsed time (sacct), and whether every executor wrote the same unit results.

    python benchmarks/slurm_overhead.py                  # 12 digits units (6 fractions x 2 seeds)
    python benchmarks/slurm_overhead.py --seeds 0 1 2 3  # more units
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.studies.config import DatasetSizeConfig, SlurmConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import DatasetSizePlan
from tttlab.studies.units import read_jobs, unit_file
from tttlab.ttt import TTTConfig


def plan(out: Path, sc: DatasetSizeConfig) -> DatasetSizePlan:
    """Digits and a linear head: units of about a second, so the per-unit overhead shows."""
    base = Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=5, lr=0.05),
        ttt=TTTConfig(k=10, epochs=10, lr=0.05),
        run=RunConfig(n_boot=100),
    )
    return DatasetSizePlan(sc, base, StudyOptions(out=str(out), progress=False))


def task_seconds(folder: Path) -> list[int]:
    """Each array task's elapsed seconds, from sacct."""
    job = read_jobs(folder)[-1]["job"]
    text = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job,
         "--format=JobID,ElapsedRaw"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [int(line.split("|")[1]) for line in text.splitlines() if "_" in line.split("|")[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--partition", default=None)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    sc = DatasetSizeConfig(fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 1.0), seeds=tuple(args.seeds))
    study_units = plan(Path("."), sc).units()
    executors = {
        "this process": SlurmConfig(),
        f"local pool, {cpus} workers": SlurmConfig(workers=cpus),
        f"Slurm array, {cpus} at once": SlurmConfig(
            executor="slurm", partition=args.partition, array_parallelism=cpus
        ),
    }
    walls, unit_results = {}, {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # under cwd: visible to the nodes
        for i, (label, slurm) in enumerate(executors.items()):
            start = time.perf_counter()
            done = run_study(plan(Path(tmp) / str(i), sc), slurm)
            walls[label] = time.perf_counter() - start
            unit_results[label] = [
                json.loads(unit_file(done.folder, u).read_text())["result"] for u in study_units
            ]
        tasks = task_seconds(done.folder)
    n = len(study_units)
    here = walls["this process"]
    print(f"{n} units (digits, dataset-size), {cpus} CPUs; each executor from a fresh cache")
    print(f"{'executor':<26} {'wall s':>8} {'s/unit':>8} {'extra s/unit':>13}")
    for label, wall in walls.items():
        print(f"{label:<26} {wall:>8.2f} {wall / n:>8.2f} {(wall - here) / n:>+13.2f}")
    mean_task = sum(tasks) / len(tasks)
    print(f"Slurm tasks' own elapsed time (sacct, whole seconds): mean {mean_task:.1f} s")
    same = all(r == unit_results["this process"] for r in unit_results.values())
    print(f"unit results identical across executors: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
