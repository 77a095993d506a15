"""How many threads tttlab computes with, and applying a count to a block of work.

    n = available_cpus()              # affinity, cgroup quota and SLURM_CPUS_PER_TASK, the least
    with compute_threads(2):          # torch's intra-op threads, BLAS's and OpenMP's (FAISS)
        ...

Results are bit-identical at a given thread count, not across counts (the TTT engine pads its
chunks to whole points per thread; BLAS splits sums by thread), so a study records the count its
units use and every executor applies it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from tttlab.checks import check_int

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota and by
    SLURM_CPUS_PER_TASK inside a Slurm job; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
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


@contextmanager
def compute_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` torch intra-op threads and BLAS and OpenMP threads (FAISS
    searches with OpenMP), then restore them."""
    check_int(threads, "threads", min=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)
