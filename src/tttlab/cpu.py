"""The CPUs as this process finds them: how many it may use, how busy they are, and the OpenMP wait
policy chosen once, before torch loads.

    available_cpus()              # affinity, cgroup quota and SLURM_CPUS_PER_TASK, the least
    START.busy, START.policy      # the load sampled when tttlab was imported, and what it chose
    policy_threads()              # threads a run computes with when none is set

Torch's CPU wheel runs its parallel regions on GNU OpenMP, whose idle threads spin before they
sleep. When other processes hold the cores, a spinning thread burns the time slice the thread it
waits for needs, and a parallel region can take many times its one-thread time. libgomp reads
OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it loads with torch, so `tttlab/__init__.py` calls
`choose_openmp()` before anything imports torch: a short sample of the CPUs this process may use
decides between sleeping at once (PASSIVE, when at least half of those CPUs are busy) and a
bounded spin (nearly libgomp's speed on a quiet machine, and a short stall if load arrives
later). A value the user set wins. The same sample gives the thread count of a run that sets
none: the CPUs that other work left idle, at least 1.

Plain Python: the command line imports it without torch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.05
"""How long the load is sampled: five scheduler ticks per CPU at the usual 100 Hz."""
RESAMPLE_AFTER = 60.0
"""A run that starts this many seconds after the import sample takes a fresh one."""
QUIET_SPINCOUNT = "10000"
"""GOMP_SPINCOUNT on a quiet machine: libgomp's default is 300000 spins, which a thread keeps
burning when the thread it waits for has been descheduled by other work."""
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CHOSEN_BY_TTTLAB = "TTTLAB_OPENMP"
"""Set beside the variables tttlab chose, so child processes know the choice was not the user's."""


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota and by
    SLURM_CPUS_PER_TASK inside a Slurm job; at least 1."""
    n = len(_affinity())
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        n = min(n, int(slurm))
    return max(1, n)


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """(busy, total) scheduler ticks of each CPU in `cpus` since boot; None where /proc/stat is
    not readable (not Linux). Steal time counts as busy: a hypervisor gave it to someone else."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        if int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:8]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out or None


def busy_cpus(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's CPUs other work kept busy over a sample of `seconds` (this
    process sleeps meanwhile); None where it cannot be measured."""
    cpus = _affinity()
    before = _cpu_times(cpus)
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times(cpus)
    if after is None:
        return None
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def free_threads(busy: float | None, cpus: int) -> int:
    """Threads that fit beside `busy` CPUs of other work, of `cpus` usable: the idle CPUs rounded,
    at least 1 (a whole busy machine computes on one thread, which no spinning can slow)."""
    if busy is None:
        return cpus
    idle = len(_affinity()) - busy
    return max(1, min(cpus, math.floor(idle + 0.5)))


@dataclass(frozen=True)
class Start:
    """What tttlab found when it was imported: the load, and the OpenMP wait policy it means."""

    busy: float | None
    """CPUs of this process's affinity that other work kept busy (None: not measurable)."""
    cpus: int
    """`available_cpus()` then."""
    policy: str
    """The wait policy torch's OpenMP runs with, and why, e.g. 'PASSIVE (3.9 of 2 CPUs busy)'."""
    at: float
    """time.monotonic() of the sample."""

    @property
    def threads(self) -> int:
        """The thread count this load allows."""
        return free_threads(self.busy, self.cpus)


START: Start | None = None
"""Set by `choose_openmp()` (tttlab's import); None before."""


def choose_openmp(environ: dict[str, str] | None = None) -> Start:
    """Sample the load and set OMP_WAIT_POLICY or GOMP_SPINCOUNT for the OpenMP that torch will
    load, unless the user set one, or torch is loaded already (then nothing can change). Once per
    process; returns (and keeps in `START`) what it found."""
    global START
    if START is not None:
        return START
    env = os.environ if environ is None else environ
    cpus = available_cpus()
    given = {name: env[name] for name in OPENMP_VARIABLES if name in env}
    busy = busy_cpus()
    load = "load not measurable" if busy is None else f"{busy:.1f} of {len(_affinity())} CPUs busy"
    if given and CHOSEN_BY_TTTLAB in env:
        policy = f"{_describe(given)} (chosen by the tttlab process that started this one)"
    elif given:
        policy = f"{_describe(given)} (set by the user)"
    elif "torch" in sys.modules:
        policy = "libgomp's default spin (torch was imported before tttlab, so it could not be set)"
    elif free_threads(busy, cpus) <= cpus / 2:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env[CHOSEN_BY_TTTLAB] = "1"
        policy = f"OMP_WAIT_POLICY=PASSIVE ({load} when tttlab started)"
    else:
        env["GOMP_SPINCOUNT"] = QUIET_SPINCOUNT
        env[CHOSEN_BY_TTTLAB] = "1"
        policy = f"GOMP_SPINCOUNT={QUIET_SPINCOUNT} ({load} when tttlab started)"
    START = Start(busy, cpus, policy, time.monotonic())
    return START


def _describe(values: dict[str, str]) -> str:
    return ", ".join(f"{name}={value[:20]}" for name, value in values.items())


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and why it was chosen (recorded with each run)."""

    threads: int
    reason: str


def policy_threads(threads: int | None = None) -> ThreadChoice:
    """`threads` when given; else OMP_NUM_THREADS when the user set it; else the CPUs this process
    may use that other work left idle (sampled at import, or again when that is over a minute
    old), at least 1."""
    if threads is not None:
        return ThreadChoice(threads, "set")
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS")
    start = START or choose_openmp()
    busy, cpus = start.busy, start.cpus
    if time.monotonic() - start.at > RESAMPLE_AFTER:
        busy, cpus = busy_cpus(), available_cpus()
    n = free_threads(busy, cpus)
    if busy is None:
        return ThreadChoice(n, f"{cpus} usable CPUs (load not measurable)")
    return ThreadChoice(n, f"{cpus} usable CPUs, {busy:.1f} busy with other work")
