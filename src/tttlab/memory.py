"""The machine's free memory, and an estimate of what some work needs checked against it before
the work starts: refused with the figure and what to change, never half-done.

    check_memory(MemoryEstimate({"pool": 4 * n * d}, available_bytes()), "Use a smaller pool")

Plain Python: the command line checks sizes without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GiB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak resident bytes of a run's parts, and what the machine has free."""

    parts: dict[str, int]
    available: int | None
    """Bytes the machine (or its cgroup) can still give; None where that cannot be read."""
    what: str = "this run"
    """What needs it, as the message says: "this run", "its largest unit", ..."""

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {v / GiB:.2f}" for name, v in self.parts.items() if v)
        free = "" if self.available is None else f"; {self.available / GiB:.1f} GiB available"
        return f"{self.what} needs about {self.total / GiB:.2f} GiB ({parts} GiB){free}"


def check_memory(est: MemoryEstimate, fixes: str) -> None:
    """Refuse work that needs more than the machine has, naming the figure and the fixes."""
    if est.available is None or est.total <= est.available:
        return
    raise MemoryError(f"{est.describe()}: not enough. {fixes}")


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, capped by a cgroup v2 memory limit when one is set."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    limit = Path("/sys/fs/cgroup/memory.max")
    current = Path("/sys/fs/cgroup/memory.current")
    try:
        cap = limit.read_text().strip()
        if cap != "max":
            free = min(free, int(cap) - int(current.read_text()))
    except (OSError, ValueError):
        pass
    return max(free, 0)
