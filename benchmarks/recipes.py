"""Time every five-minute recipe of the README, in order, in a fresh folder, as a new user runs
them, and print the table with the machine's load beside each time.

    python benchmarks/recipes.py                      # every recipe, in a temp folder
    python benchmarks/recipes.py --only sae lm-size   # the recipes whose command names these
    python benchmarks/recipes.py --dir /tmp/recipes   # keep what they write

The commands come from the README's table itself, so what is timed is what the README says.
`tttlab` runs as `python -m tttlab` from this checkout's src/, `python examples/...` from this
checkout's examples/. The load is the 1-minute load average at the start and the end of each
command (2 cores: a load of 2 is a busy machine, more is a shared one).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipes(readme: Path = ROOT / "README.md") -> list[tuple[str, str]]:
    """(task, command) of each row of the README's five-minute table that has a command."""
    table = readme.read_text(encoding="utf-8").split("## Try each task")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return [
        (r[0].removeprefix("| ").strip(), r[1].strip("`"))
        for r in rows
        if len(r) > 2 and r[1].startswith("`")
    ]


def shell_command(command: str) -> str:
    """The recipe as this checkout runs it: tttlab from src/, examples from examples/."""
    if command.startswith("tttlab "):
        command = f"{shlex.quote(sys.executable)} -m {command}"
    elif command.startswith("python "):
        command = f"{shlex.quote(sys.executable)} {command.removeprefix('python ')}"
    return re.sub(r"(?<![\w/])examples/", f"{ROOT}/examples/", command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="working folder (default: a temp folder)")
    parser.add_argument("--only", nargs="*", default=None, help="words a recipe must contain")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per recipe")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="tttlab-recipes-"))
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    print(f"working folder: {work}; {os.cpu_count()} CPUs")
    print("| task | command | wall | load (start, end) | exit |")
    print("| --- | --- | --- | --- | --- |")
    for task, command in recipes():
        if args.only and not any(word in command for word in args.only):
            continue
        load0 = os.getloadavg()[0]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                shell_command(command), shell=True, cwd=work, env=env, timeout=args.timeout,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            code, why = (
                done.returncode,
                done.stderr.strip().splitlines()[-1:] if done.returncode else [],
            )
        except subprocess.TimeoutExpired:
            code, why = "timeout", []
        seconds = time.perf_counter() - start
        wall = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        load = f"{load0:.1f}, {os.getloadavg()[0]:.1f}"
        print(f"| {task} | `{command}` | {wall} | {load} | {code}{': ' + why[0] if why else ''} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
