"""The launching rank's watch on the ranks it started: it waits before killing, and is installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import lightning as L

from dpo_exp.training.ranks import PatientLauncher, launch_patiently, process_alive

# A launching process whose started rank has already failed: the watch polls every 0.1 s, and
# gives the launching process `report_s` before killing it; the process itself exits after `own_s`.
LAUNCHING = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from dpo_exp.training import ranks
    ranks.REPORT_S = float(sys.argv[1])
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    child.wait()
    ranks.PatientObserver(main_pid=os.getpid(), child_processes=[child], sleep_period=0.1).start()
    time.sleep(float(sys.argv[2]))
    raise SystemExit(3)
    """
)


def launching(report_s: float, own_s: float) -> tuple[int, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", LAUNCHING, str(report_s), str(own_s)], timeout=60)
    return result.returncode, time.monotonic() - started


def test_a_launching_rank_that_fails_within_the_grace_exits_with_its_own_error():
    code, _ = launching(report_s=30.0, own_s=0.5)
    assert code == 3  # not Lightning's SIGKILL 0.1 s after the started rank's death


def test_a_launching_rank_still_running_after_the_grace_is_killed():
    code, elapsed = launching(report_s=1.0, own_s=60.0)
    assert code == -signal.SIGKILL
    assert 1.0 <= elapsed < 30  # killed at the end of the grace, not before, nor after its own 60 s


def test_ddp_trainers_launch_ranks_patiently_and_single_process_ones_launch_nothing():
    ddp = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False)
    launch_patiently(ddp)
    assert type(ddp.strategy.launcher) is PatientLauncher
    assert (ddp.strategy.launcher.num_processes, ddp.strategy.launcher.num_nodes) == (2, 1)
    single = L.Trainer(accelerator="cpu", devices=1, logger=False)
    launch_patiently(single)
    assert single.strategy.launcher is None


def test_a_reaped_or_zombie_process_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_alive(child.pid):  # it ends, and stays a zombie until waited for
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert os.path.exists(f"/proc/{child.pid}")  # the zombie is still there, not alive
    child.wait()
    assert not process_alive(child.pid)
    assert process_alive(os.getpid())
