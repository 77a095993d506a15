"""How many threads tttlab computes with, and applying a count to a block of work.

    n = available_cpus()              # affinity, cgroup quota and SLURM_CPUS_PER_TASK, the least
    choice = policy_threads(None)     # a run's --threads, else the CPUs other work left idle
    with compute_threads(2):          # torch's intra-op threads, BLAS's and OpenMP's (FAISS)
        ...

Results are bit-identical at a given thread count, not across counts (the TTT engine pads its
chunks to whole points per thread; BLAS splits sums by thread), so a study records the count its
units use and every executor applies it, and a run records the count it used (`thread_record`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from tttlab.checks import check_int
from tttlab.cpu import ThreadChoice, available_cpus, choose_openmp, policy_threads

__all__ = [
    "ThreadChoice",
    "available_cpus",
    "compute_threads",
    "policy_threads",
    "thread_record",
]


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


def thread_record(choice: ThreadChoice | None = None) -> dict[str, Any]:
    """What a run records about its threads: the count (default: torch's now), why, and torch's
    OpenMP wait policy."""
    choice = choice or ThreadChoice(torch.get_num_threads(), "the caller's")
    return {
        "threads": choice.threads,
        "threads_chosen_by": choice.reason,
        "openmp_wait": choose_openmp().policy,
    }
