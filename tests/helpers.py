"""Composing the project's Hydra config in tests, as the CLI would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dpo_exp.cli import CONF_DIR
from dpo_exp.config import validate_config
from dpo_exp.data.module import PreferenceDataModule
from dpo_exp.training.metrics_file import METRICS, read_metrics
from dpo_exp.training.module import PreferenceModule
from dpo_exp.training.run import assemble_run
from tests.conftest import PROJECT_ROOT

# Small and fast: a 2-layer 32-wide model and a few dozen steps' worth of data.
FAST_MODEL = [
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
]
FAST_DATA = [
    "data=synthetic",
    "data.options.num_examples=96",
    "data.val_size=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
]
FAST_TRAINER = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# One preference run on a fixed dataset, not the built-in experiment (the default data).
SINGLE_RUN = ["data=synthetic"]
FAST = SINGLE_RUN + FAST_MODEL + FAST_DATA + FAST_TRAINER


# The built-in experiment (the default data) at a size that runs in seconds.
SMALL_EXPERIMENT = [
    *FAST_MODEL,
    *FAST_TRAINER,
    "task.reward=tests.e2e.rewards:partial_credit",  # a module that sets no offline switch
    "task.pass_threshold=0.5",
    "task.splits.eval=32",
    "task.splits.tune=8",
    "task.splits.sft=64",
    "task.splits.sample=32",
    "task.splits.sample_val=16",
    "task.splits.sft_check=16",
    "sft.steps=30",
    "sft.target_reward=null",
    "sft.batch_size=16",
    "sft.lr=1e-2",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "sample.num_samples=4",
    "evaluate.batch_size=32",
]


def compose_config(overrides: list[str] | None = None, *, fast: bool = True) -> DictConfig:
    """The config `python train.py` composes from these overrides (after FAST's, with `fast`).

    A later `data=...` choice replaces an earlier one (FAST's `data=synthetic`), as a test means.
    """
    requested = last_data_choice((FAST if fast else []) + list(overrides or []))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=requested)


def last_data_choice(overrides: list[str]) -> list[str]:
    """The overrides with only the last `data=...` choice (Hydra takes one choice per group)."""
    last = max((i for i, o in enumerate(overrides) if o.startswith("data=")), default=None)
    return [o for i, o in enumerate(overrides) if not o.startswith("data=") or i == last]


def train_py(
    *arguments: str, multirun: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python train.py [-m] arguments` in a subprocess from the project root, offline."""
    command = [sys.executable, "train.py", *(["-m"] if multirun else []), *last_data_choice(list(arguments))]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def dpo_exp_command(*arguments: str) -> subprocess.CompletedProcess:
    """`dpo-exp arguments` (the console script's own dispatch) in a subprocess from the project root,
    offline."""
    command = [sys.executable, "-c", "from dpo_exp.commands import console_main; console_main()", *arguments]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def train_losses(run_dir: Path) -> list[float]:
    """The `train/loss` column of a run's metrics.csv (without a row cut short, as the reports read it)."""
    return [float(loss) for loss in read_metrics(run_dir / METRICS)["train/loss"].dropna()]


def assemble(cfg: DictConfig) -> tuple[PreferenceModule, PreferenceDataModule]:
    """The module and data module of a run, built from its config by the CLI's own builders."""
    validate_config(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    parts = assemble_run(cfg)
    return parts.module, parts.datamodule


def without_launchers(environment: dict[str, str]) -> dict[str, str]:
    """`environment` less what a cluster launcher (torchrun, srun) tells a process of its world."""
    told = (
        "TORCHELASTIC_RUN_ID",
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    )
    return {
        name: value
        for name, value in environment.items()
        if name not in told and not name.startswith("SLURM_")
    }


def ctrl_c_after_first_checkpoint(arguments: list[str], output_root: Path) -> str:
    """`python train.py <arguments>` stopped by Ctrl-C once its first checkpoint is written; asserts
    it exits 130 and returns its stderr."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        [sys.executable, "train.py", *arguments], cwd=PROJECT_ROOT, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's Ctrl-C
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(output_root.glob("runs/*/*/checkpoints/step*.ckpt.digests.json")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr[-3000:]
    return stderr
