"""Beyond one machine, on one: docs/distributed.md's torchrun command as two node ranks on 127.0.0.1, its
srun command as two processes given SLURM's variables by hand, and a world the config does not
match refused before anything loads."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.e2e.readme import PAGES, arguments
from tests.helpers import FAST, FAST_TRAINER, train_losses, train_py, without_launchers

pytestmark = pytest.mark.slow

# Both launches train in the same order as one process with their global batch (2 × 4 pairs).
IN_ORDER = [
    *FAST_TRAINER,
    "data.val_size=20",
    "data.shuffle=false",
    "optim.warmup_steps=0",
    "optim.eps=1e-3",  # as in test_distributed.py: summation order cannot flip Adam's first updates
    "data.eval_batch_size=10",
]


def readme_line(launcher: str) -> str:
    """docs/distributed.md's command that starts with `launcher` (continued lines joined)."""
    (section,) = re.findall(r"## Beyond one machine.*?```bash\n(.*?)```", PAGES["docs/distributed.md"], re.S)
    (line,) = [line for line in section.splitlines() if line.startswith(launcher)]
    return line.split(" #")[0].strip()


def split_launch(line: str, stand_ins: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the launcher's words before `train.py`, the train.py arguments with the reader's files)."""
    before, _, after = line.partition(" train.py ")
    return shlex.split(before), arguments(f"python train.py {after}", stand_ins)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(**variables: str) -> dict[str, str]:
    env = without_launchers(dict(os.environ))
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", **variables)
    return env


def finish(processes: list[subprocess.Popen]) -> list[str]:
    """Each process's stderr, once all have ended; every one must have succeeded."""
    errors = [process.communicate(timeout=300)[1] for process in processes]
    for process, stderr in zip(processes, errors, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return errors


def one_process(tmp_path: Path, train_arguments: list[str]) -> Path:
    """The same run in one process with the global batch of 8."""
    single = [*train_arguments, "strategy=single", "strategy.devices=1", "strategy.num_nodes=1"]
    result = train_py(*single, *IN_ORDER, "data.batch_size=8", f"output_root={tmp_path / 'single'}")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "single" / "runs").glob("*/*")
    return run_dir


def check_two_nodes_equal_one_process(output_root: Path, single_dir: Path) -> None:
    (run_dir,) = (output_root / "runs").glob("*/*")  # one folder for both ranks
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["world_size"], summary["num_nodes"]) == (2, 2)
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config.yaml").exists()
    single = json.loads((single_dir / "summary.json").read_text())
    assert train_losses(run_dir) == pytest.approx(train_losses(single_dir), abs=1e-5)
    validation = {name for name in single["metrics"] if name.startswith("val/")}
    assert {"val/loss", "val/logps/chosen", "val/logratio/rejected", "val/grad_weight"} <= validation
    for name in validation:  # every validation figure is the global one, not rank 0's half
        assert summary["metrics"][name] == pytest.approx(single["metrics"][name], abs=1e-5), name


def test_the_readme_torchrun_command_as_two_node_ranks_trains_as_one_process(tmp_path, reader_files):
    line, port = readme_line("torchrun"), str(free_port())
    processes = []
    for rank in ("0", "1"):
        here = line.replace("--node-rank=R", f"--node-rank={rank}").replace("MAIN_ADDR", "127.0.0.1")
        launcher, train_arguments = split_launch(here.replace("=29500", f"={port}"), reader_files)
        assert launcher[0] == "torchrun"  # the same launcher, as `python -m` of the venv's torch
        command = [sys.executable, "-m", "torch.distributed.run", *launcher[1:], "train.py", *train_arguments]
        command += [*IN_ORDER, "data.batch_size=4", f"output_root={tmp_path / 'nodes'}"]
        processes.append(launch(command, clean_environment()))
    errors = finish(processes)
    assert "sync_dist" not in "".join(errors)  # Lightning's warning of epoch figures not reduced
    check_two_nodes_equal_one_process(tmp_path / "nodes", one_process(tmp_path, train_arguments))


def launch(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def slurm_task(rank: int, port: str) -> dict[str, str]:
    """What srun --nodes=2 --ntasks-per-node=1 gives task `rank` (its node's rank too)."""
    variables = {"NTASKS": "2", "NTASKS_PER_NODE": "1", "NNODES": "2", "PROCID": str(rank), "LOCALID": "0"}
    variables.update(NODEID=str(rank), JOB_ID="4242", JOB_NAME="dpo_exp", NODELIST="127.0.0.1")
    return clean_environment(
        MASTER_PORT=port, **{f"SLURM_{name}": value for name, value in variables.items()}
    )


def test_the_readme_srun_command_reads_its_world_from_slurms_variables(tmp_path, reader_files):
    launcher, train_arguments = split_launch(readme_line("srun"), reader_files)
    assert launcher == ["srun", "--nodes=2", "--ntasks-per-node=1", "python"]  # what slurm_task gives
    port = str(free_port())
    command = [sys.executable, "train.py", *train_arguments, *IN_ORDER, "data.batch_size=4"]
    command.append(f"output_root={tmp_path / 'nodes'}")
    processes = [launch(command, slurm_task(rank, port)) for rank in (1, 0)]
    finish(processes)
    check_two_nodes_equal_one_process(tmp_path / "nodes", one_process(tmp_path, train_arguments))


def rank_zero_of_two(*train_arguments: str) -> subprocess.CompletedProcess:
    """`python train.py` as rank 0 of a torchrun world of 2 whose other rank never comes."""
    env = clean_environment(TORCHELASTIC_RUN_ID="none", WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    command = [sys.executable, "train.py", *train_arguments]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_world_the_config_does_not_state_is_refused_before_anything_loads(tmp_path):
    result = rank_zero_of_two("data=synthetic", f"output_root={tmp_path}")  # strategy=single
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "strategy.num_nodes=1 × strategy.devices=1 is a world of 1, but torchrun (WORLD_SIZE=2) started "
        "2 processes: set them to the launcher's nodes and processes per node"
    )
    assert "[train]" not in result.stdout + result.stderr  # refused at the entry: nothing loaded
    assert not list(tmp_path.rglob("config.yaml"))  # and no run folder left


def test_a_checkpoint_resumes_only_in_the_world_that_wrote_it(tmp_path):
    run_dir, every = tmp_path / "run", "checkpoint.every_n_steps=2"
    first = train_py(*FAST, every, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir / "summary.json").unlink()  # as if killed after its last checkpoint
    again = train_py(*FAST, every, "strategy=ddp", "resume=auto", f"hydra.run.dir={run_dir}")
    assert again.returncode == 1
    assert (
        f"resume: run folder {run_dir} holds a run of another config (differs in strategy.devices: 1 -> 2;"
        in again.stderr
    )


def torchrun_node(rank: int, port: str, *train_arguments: str) -> subprocess.Popen:
    nodes = ["--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}", "--master-addr=127.0.0.1"]
    command = [sys.executable, "-m", "torch.distributed.run", *nodes, f"--master-port={port}", "train.py"]
    return launch([*command, *train_arguments], clean_environment())


def test_a_node_rank_killed_mid_run_is_named_and_both_resume_from_its_checkpoint(tmp_path):
    world = ["strategy=ddp", "strategy.devices=1", "strategy.num_nodes=2", f"output_root={tmp_path}"]
    arguments = [*FAST, *world, "trainer.max_steps=2000", "checkpoint.every_n_steps=5"]
    port = str(free_port())
    nodes = [torchrun_node(rank, port, *arguments) for rank in (0, 1)]
    deadline = time.monotonic() + 240
    while not (written := list(tmp_path.glob("runs/*/*/checkpoints/*.digests.json"))):
        assert all(node.poll() is None for node in nodes), nodes[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    agent = nodes[1].pid  # node 1's torchrun agent; its one child is rank 1
    (worker,) = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    os.kill(int(worker), signal.SIGKILL)
    killed = time.monotonic()
    stderr = nodes[0].communicate(timeout=120)[1]
    nodes[1].communicate(timeout=120)
    assert time.monotonic() - killed < 60  # rank 0 does not hang on its lost peer
    assert nodes[0].returncode != 0 and nodes[1].returncode != 0
    message = (
        "rank 1 of 2 stopped (its process died or was killed); this run failed: resume it with resume=auto"
    )
    assert message in stderr
    (run_dir,) = tmp_path.glob("runs/*/*")
    assert (run_dir / "failed.txt").read_text().startswith(f"LostRankError: {message}")

    # Both node ranks take rank 0's choice of checkpoint, and run the few steps left.
    step = max(int(re.search(r"step(\d+)", path.name).group(1)) for path in written)
    resumed = [*FAST, *world, f"trainer.max_steps={step + 2}", "checkpoint.every_n_steps=5", "resume=auto"]
    port = str(free_port())
    finish([torchrun_node(rank, port, *resumed) for rank in (0, 1)])
    (summary_path,) = tmp_path.glob("runs/*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["global_step"] == step + 2 and summary["world_size"] == 2
    assert Path(summary["resumed_from"]).parent.parent == run_dir


def test_a_sweep_started_on_every_rank_of_a_launch_is_refused(tmp_path):
    result = rank_zero_of_two("-m", "data=synthetic", "beta=0.1,0.5", f"output_root={tmp_path}")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("-m under torchrun (2 processes): every rank would run the whole sweep;")
    )
    assert not (tmp_path / "sweeps").exists()
