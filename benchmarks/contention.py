"""Every CPU path's time alone and beside busy processes, before and after tttlab's thread policy.

    PYTHONPATH=src python benchmarks/contention.py            # alone, beside 2 and 4 busy processes
    PYTHONPATH=src python benchmarks/contention.py --quick    # one repeat, smaller loads

Three ways of running each path, each in a fresh process (libgomp reads its wait policy once):
  before  torch imported first: libgomp's default spin, one thread per usable CPU (tttlab 0.1);
  after   tttlab imported first: the wait policy and thread count it chooses from the load;
  1 thread  torch imported first, one thread: the bound "after" must stay under when busy;
  forced  tttlab's wait policy but one thread per usable CPU, as a study folder recorded on a
          quiet machine (or --threads) imposes: what the wait policy alone saves.
The script starts its own load (N busy Python processes, each ending itself after a time limit,
and stopped when a level is done), and measures every level in one run, so ratios compare like
with like even when other work shares the machine. Paths: CNN training (40 steps of the d = 25
CNN), features (that CNN on 4096 images), kNN (exact, 20000 x 64 pool, 2000 queries, k = 50),
the TTT engine (600 points of a 25-d, 10-class head, k = 100, 50 epochs), SAE training (4096 x 64
rows, 2 epochs) and language-model TTT (a 2-layer GPT, 6 documents, 8 neighbours each).
Each figure is the median of --repeats rounds (the modes' order rotating), in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"
MODES = ("before", "after", "one", "forced")
PATHS = ("cnn_train", "features", "knn", "engine", "sae_train", "lm_ttt")


# ---------------------------------------------------------------- the paths (in a child process)


def setup(path: str):
    """A callable that runs `path` once (its inputs built here, outside the timing)."""
    import torch

    g = torch.Generator().manual_seed(0)
    if path in ("cnn_train", "features"):
        from tttlab.models import CNN, TrainConfig, extract_features, fit, scale_for_width

        x = torch.randn(40 * 128 if path == "cnn_train" else 4096, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (len(x),), generator=g)
        torch.manual_seed(0)
        model = CNN(scale_for_width(25), 10)
        if path == "features":
            return lambda: extract_features(model, x)
        cfg = TrainConfig(epochs=1, batch_size=128)
        return lambda: fit(model, x, y, x[:256], y[:256], cfg, progress=False)
    if path == "knn":
        from tttlab.retrieval import KNNIndex

        pool, queries = torch.randn(20000, 64, generator=g), torch.randn(2000, 64, generator=g)
        return lambda: KNNIndex().fit(pool.numpy()).search(queries.numpy(), 50)
    if path == "engine":
        from tttlab.retrieval import KNNIndex
        from tttlab.ttt import TTTConfig, ttt_logits

        pool, queries = torch.randn(20000, 25, generator=g), torch.randn(600, 25, generator=g)
        labels = (pool @ torch.randn(25, 10, generator=g)).argmax(1)
        head = torch.nn.Linear(25, 10)
        nbrs = torch.from_numpy(KNNIndex().fit(pool.numpy()).search(queries.numpy(), 100)[1])
        cfg = TTTConfig(k=100, epochs=50, lr=0.05)
        return lambda: ttt_logits(head.weight, head.bias, pool, labels, queries, nbrs, cfg)
    if path == "sae_train":
        from tttlab.sae.config import SaeConfig, SaeTrainConfig
        from tttlab.sae.trainer import train_sae

        x = torch.randn(4096, 64, generator=g).numpy()
        cfg, train = SaeConfig(d_in=64, k=8), SaeTrainConfig(epochs=2, batch_size=256)
        return lambda: train_sae(x, cfg, train)
    if path == "lm_ttt":
        from tttlab.lm.config import GPTConfig, LMTTTConfig
        from tttlab.lm.gpt import GPT
        from tttlab.lm.model import LanguageModel
        from tttlab.lm.ttt import ttt_bits

        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab=256, context=128, width=64, layers=2, heads=2)).eval()
        lm = LanguageModel("gpt", model, lambda t: list(t.encode()), 0, 128,
                           [model.wte, model.wpe], list(model.blocks), [model.lnf])  # fmt: skip
        docs = torch.randint(1, 256, (6 * 9, 100), generator=g).tolist()
        queries = docs[:6]
        neighbours = [docs[6 + 8 * i : 6 + 8 * (i + 1)] for i in range(6)]
        cfg = LMTTTConfig(k=8, lr=1e-4)
        return lambda: ttt_bits(lm, queries, neighbours, cfg, progress=False)
    raise ValueError(f"unknown path {path!r}")


def child(mode: str, paths: list[str], repeats: int) -> None:
    """Time each path in this process, set up as `mode` says; one JSON line per path."""
    if mode in ("after", "forced"):
        import tttlab  # first: it chooses the wait policy before torch loads
        from tttlab.threads import available_cpus, compute_threads, policy_threads

        choice = policy_threads()
        threads = choice.threads if mode == "after" else available_cpus()
        policy = tttlab.cpu.START.policy
    else:
        from tttlab.threads import available_cpus, compute_threads

        threads = available_cpus() if mode == "before" else 1
        policy = "libgomp default"
    with compute_threads(threads):
        for path in paths:
            run = setup(path)
            run()  # warm-up: first-call allocations, lazy imports
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            line = {"path": path, "seconds": statistics.median(times), "threads": threads}
            print(json.dumps(line | {"policy": policy}), flush=True)


# ---------------------------------------------------------------- the driver


def start_load(n: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def measure(mode: str, paths: list[str], repeats: int, limit: float) -> dict[str, dict]:
    """One child's figures by path; a path still running at `limit` seconds is reported as None."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TTTLAB_OPENMP", "OMP_NUM_THREADS")
    }
    args = [sys.executable, __file__, "--child", mode, "--repeats", str(repeats), "--paths", *paths]
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=limit)
        out, err = done.stdout, done.stderr if done.returncode else ""
    except subprocess.TimeoutExpired as stopped:
        out, err = (stopped.stdout or b"").decode(), ""
    if err:
        print(err, file=sys.stderr)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {row["path"]: row for row in rows}


def measure_level(paths: list[str], repeats: int, limit: float) -> dict[str, dict]:
    """Each mode's median per path over `repeats` rounds, the modes' order rotating each round so
    that a swing of the machine's other work falls on every mode alike."""
    runs: dict[str, dict[str, list]] = {mode: {} for mode in MODES}
    for r in range(repeats):
        for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
            for path, row in measure(mode, paths, 1, limit).items():
                runs[mode].setdefault(path, []).append(row)
    return {
        mode: {path: rows[0] | {"seconds": statistics.median(x["seconds"] for x in rows)}
               for path, rows in by_path.items()}
        for mode, by_path in runs.items()
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, loads of 2 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--limit", type=float, default=600, help="seconds per child process")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.paths, args.repeats)
        return
    if args.quick:
        args.repeats, args.loads = 1, [0, 2]
    with open("/proc/loadavg") as f:
        ambient = f.read().split()[:4]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(ambient[:3])} and "
          f"{ambient[3]} runnable/total tasks before this script's own load")  # fmt: skip
    results: dict[int, dict[str, dict]] = {}
    for n in args.loads:
        procs = start_load(n, seconds=len(MODES) * args.repeats * args.limit) if n else []
        try:
            time.sleep(1.0 if n else 0.0)  # the load is running before a child samples it
            results[n] = measure_level(args.paths, args.repeats, args.limit)
        finally:
            stop_load(procs)
    print_table(results, args.paths)


def ratio(x: dict | None, y: dict | None) -> str:
    return f"{x['seconds'] / y['seconds']:.2f}" if x and y else "-"


def print_table(results: dict[int, dict[str, dict]], paths: list[str]) -> None:
    def cell(row: dict | None) -> str:
        return "killed" if row is None else f"{row['seconds']:.2f} ({row['threads']}t)"

    print(f"\n{'path':<10} {'load':<9} {'before':>12} {'after':>12} {'1 thread':>12} "
          f"{'forced':>12} {'after/1t':>9} {'after/before':>13} {'forced/1t':>10}")  # fmt: skip
    for path in paths:
        for n, modes in results.items():
            b, a, o, f = (modes[m].get(path) for m in MODES)
            load = "alone" if n == 0 else f"{n} busy"
            cells = f"{cell(b):>12} {cell(a):>12} {cell(o):>12} {cell(f):>12}"
            ratios = f"{ratio(a, o):>9} {ratio(a, b):>13} {ratio(f, o):>10}"
            print(f"{path:<10} {load:<9} {cells} {ratios}")
    policies = {row["policy"] for modes in results.values() for row in modes["after"].values()}
    print("\nafter's wait policy: " + "; ".join(sorted(policies)))


if __name__ == "__main__":
    main()
