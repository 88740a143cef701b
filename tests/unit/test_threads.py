"""The OpenMP wait policy: a short spin on a quiet CPU, passive on a shared one and for children."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dpo_exp import threads


@pytest.mark.parametrize(
    ("others", "cpus", "expected"),
    [
        (0.0, 2, {"GOMP_SPINCOUNT": threads.SPIN_COUNT}),
        (0.8, 2, {"GOMP_SPINCOUNT": threads.SPIN_COUNT}),
        (1.0, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),  # half the CPUs busy elsewhere
        (3.0, 8, {"GOMP_SPINCOUNT": threads.SPIN_COUNT}),
        (4.0, 8, {"OMP_WAIT_POLICY": "PASSIVE"}),
        (None, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),  # cannot tell: the safe choice
    ],
)
def test_threads_spin_only_when_no_other_task_is_running(monkeypatch, others, cpus, expected):
    monkeypatch.setattr(threads, "other_runnable_tasks", lambda: others)
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    assert threads.wait_policy() == expected


def test_the_kernels_count_of_runnable_tasks_is_read():
    others = threads.other_runnable_tasks(window_s=0.0)
    assert others is None or others >= 0


def test_two_processes_that_check_at_once_each_count_the_other():
    # Both wait for the same moment, then check: each must see the other running its check.
    code = (
        "import sys, time\n"
        "from dpo_exp.threads import other_runnable_tasks\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "print(other_runnable_tasks())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # the package's own check at import stays out of the way
    moment = str(time.time() + 3.0)
    checks = [
        subprocess.Popen([sys.executable, "-c", code, moment], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    seen = [check.communicate()[0].strip() for check in checks]
    if "None" in seen:
        pytest.skip("/proc/loadavg cannot be read here")
    assert all(float(others) >= 0.5 for others in seen), seen


@pytest.mark.parametrize("setting", [None, "OMP_WAIT_POLICY=ACTIVE", "GOMP_SPINCOUNT=5"])
def test_children_wait_passively_unless_the_environment_says_otherwise(setting):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if setting is not None:
        name, value = setting.split("=")
        env[name] = value
    code = "import os, dpo_exp; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = {None: "PASSIVE None", "OMP_WAIT_POLICY=ACTIVE": "ACTIVE None", "GOMP_SPINCOUNT=5": "None 5"}
    assert done.stdout.strip() == expected[setting]
