"""The world a cluster launcher states, checked against the config; rank 0's decisions shared."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from torch.distributed import TCPStore

from dpo_exp.cli import main
from dpo_exp.console import is_main_process
from dpo_exp.errors import ConfigError
from dpo_exp.world import agreed, check_world, cluster_environment, started_by_lightning
from tests.helpers import without_launchers


@pytest.fixture
def no_launcher(monkeypatch):
    for name in set(os.environ) - set(without_launchers(dict(os.environ))):
        monkeypatch.delenv(name)
    return monkeypatch


def torchrun(monkeypatch, world: int, rank: int) -> None:
    for name, value in {
        "TORCHELASTIC_RUN_ID": "none",
        "WORLD_SIZE": world,
        "RANK": rank,
        "LOCAL_RANK": 0,
    }.items():
        monkeypatch.setenv(name, str(value))


def slurm(monkeypatch, tasks: int, nodes: int, rank: int) -> None:
    variables = {"NTASKS": tasks, "NTASKS_PER_NODE": tasks // nodes, "NNODES": nodes, "PROCID": rank}
    variables.update(LOCALID=0, NODEID=rank, JOB_NAME="dpo")
    for name, value in variables.items():
        monkeypatch.setenv(f"SLURM_{name}", str(value))


def test_without_a_launcher_any_world_is_lightnings_to_start(no_launcher):
    assert cluster_environment() is None and is_main_process() and not started_by_lightning()
    check_world(4, 8)  # Lightning starts 8 processes here; other nodes are the user's to start
    no_launcher.setenv("LOCAL_RANK", "1")
    assert started_by_lightning() and not is_main_process()


def test_torchrun_world_must_be_nodes_times_devices(no_launcher):
    torchrun(no_launcher, world=2, rank=1)
    check_world(2, 1)
    check_world(1, 2)
    assert not is_main_process() and not started_by_lightning()
    with pytest.raises(ConfigError) as refused:
        check_world(1, 1)
    world = "strategy.num_nodes=1 × strategy.devices=1 is a world of 1"
    assert str(refused.value).startswith(f"{world}, but torchrun (WORLD_SIZE=2) started 2 processes")


def test_slurm_world_is_its_tasks_on_its_nodes(no_launcher):
    slurm(no_launcher, tasks=2, nodes=2, rank=0)
    assert is_main_process()
    check_world(2, 1)
    with pytest.raises(ConfigError, match=r"SLURM \(SLURM_NTASKS=2, SLURM_NNODES=2\) started 2 processes"):
        check_world(1, 2)  # 2 processes, but on one node where SLURM has 2
    with pytest.raises(ConfigError, match="strategy.devices=auto: under SLURM it must be the number"):
        check_world(2, "auto")


def test_in_one_process_the_decision_is_its_own(no_launcher):
    assert agreed("run_folder", lambda: "here") == "here"


# Two ranks of a torchrun-like launch with no agent store: rank 0 hosts it, rank 1 asks it.
RANK = textwrap.dedent(
    """
    import sys
    from dpo_exp.errors import ConfigError
    from dpo_exp.world import agreed
    rank, refuse = sys.argv[1], sys.argv[2] == "refuse"
    def decide():
        if refuse:
            raise ConfigError("resume=auto: refused on rank " + rank)
        return "decided by rank " + rank
    try:
        print(agreed("resume", decide))
    except ConfigError as error:
        print("ConfigError:", error)
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_ranks(refuse: bool, late_asker: bool = False) -> list[str]:
    """What ranks 0 and 1 print. The asking rank starts first, waiting for the store and its key;
    or, `late_asker`, only once rank 0 has put its answer in the store, as SLURM may order them."""
    port = free_port()
    ranks = {}
    for rank in (0, 1) if late_asker else (1, 0):
        env = without_launchers(dict(os.environ))
        env.update(TORCHELASTIC_RUN_ID="none", WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0")
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, "-c", RANK, str(rank), "refuse" if refuse else "decide"]
        ranks[rank] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        if late_asker and rank == 0:
            store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60))
            store.wait(["dpo_exp/0/resume"])
    return [ranks[rank].communicate(timeout=120)[0].strip() for rank in (0, 1)]


# The asker started after rank 0 has answered takes two process starts in a row: the slow tier's.
ORDERS = [
    pytest.param(False, id="asker first"),
    pytest.param(True, id="asker after the answer", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("late_asker", ORDERS)
def test_every_rank_takes_rank_0s_decision(late_asker):
    assert two_ranks(refuse=False, late_asker=late_asker) == ["decided by rank 0", "decided by rank 0"]


@pytest.mark.parametrize("late_asker", ORDERS)
def test_every_rank_stops_with_rank_0s_refusal(late_asker):
    refusal = "ConfigError: resume=auto: refused on rank 0"
    assert two_ranks(refuse=True, late_asker=late_asker) == [refusal, refusal]


def test_slurm_variables_without_sruns_are_one_line_before_anything_runs(no_launcher):
    """A batch script's SLURM_NTASKS without srun's SLURM_NTASKS_PER_NODE: Lightning raises a
    RuntimeError that Hydra would show as a traceback inside the run folder's name."""
    for name, value in {"NTASKS": 2, "JOB_NAME": "dpo", "PROCID": 0, "NODEID": 0, "LOCALID": 0}.items():
        no_launcher.setenv(f"SLURM_{name}", str(value))
    with pytest.raises(ConfigError, match="SLURM_NTASKS=2 is set but not SLURM_NTASKS_PER_NODE"):
        cluster_environment()
    no_launcher.setattr(sys, "argv", ["train.py", "data=synthetic"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert str(stopped.value.code).startswith("SLURM_NTASKS=2 is set but not SLURM_NTASKS_PER_NODE, as in")
    assert "\n" not in str(stopped.value.code)
