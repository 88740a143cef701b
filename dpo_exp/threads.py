"""How torch's OpenMP threads wait between parallel regions, decided once when the package loads.

Spinning threads pick up the next region at once; sleeping ones take a wake-up each time, but
leave the cores to other work. `python bench/threads.py` measured, for a small model's training
step on 2 threads (this project's 2-core CPU, 40 steps, medians of 2): alone, 4.7 s spinning up
to 10,000 iterations before sleeping against 7.7 s sleeping at once (passive); beside a copy of
itself, 17.7 s spinning against 11.2 s passive. So threads spin briefly when no other task is
running on the CPUs this process may use, and sleep at once when the CPUs are shared (this
choice: 5.3 s alone, 9.6 s beside a copy started together). The choice is not revisited: a
process that spins keeps spinning when another starts beside it later (14.5 s for the pair).
Processes this one starts (DDP ranks, parallel sweep members, workers) run beside it, so they
inherit passive waiting. libgomp reads its settings when torch loads it: `set_wait_policy` runs
before any module of the package imports torch.
"""

from __future__ import annotations

import os
import time

SPIN_COUNT = "10000"  # libgomp's iterations of spinning before a thread sleeps (its default: 300,000)


def other_runnable_tasks(window_s: float = 0.05) -> float | None:
    """Mean number of runnable tasks besides this one (the kernel's count in /proc/loadavg), read
    over and over for `window_s`; None where the count cannot be read.

    The readings do not sleep between them: a process that checks stays runnable while it does,
    so two processes started together each count the other (sleeping between readings, each
    checked while the other slept, and both chose to spin: 17.9 s beside a copy against 8.5 s).
    """
    counts = []
    deadline = time.perf_counter() + window_s
    try:
        while not counts or time.perf_counter() < deadline:
            with open("/proc/loadavg") as handle:
                counts.append(int(handle.read().split()[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return None
    return sum(counts) / len(counts)


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def wait_policy() -> dict[str, str]:
    """The OpenMP settings for this process: a short spin on a quiet CPU, passive on a shared one
    (or where it cannot be told which)."""
    others = other_runnable_tasks()
    if others is None or others >= 0.5 * usable_cpus():
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


def set_wait_policy() -> None:
    """Load torch under `wait_policy()`, then leave passive waiting for child processes; where the
    environment already says how threads wait, it decides, for children too."""
    if any(name in os.environ for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        return
    os.environ.update(wait_policy())
    import torch  # noqa: F401  (libgomp reads the environment as it loads)

    os.environ.pop("GOMP_SPINCOUNT", None)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
