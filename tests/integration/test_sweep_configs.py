"""Every named sweep under sweeps/ composes, states its question, and sweeps keys that exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dpo_exp.cli import CONF_DIR
from dpo_exp.config import validate_config
from tests.conftest import PROJECT_ROOT

SWEEPS_DIR = PROJECT_ROOT / "sweeps"
SWEEP_FILES = sorted(SWEEPS_DIR.glob("*.yaml"))


def compose_sweep(name: str, overrides: list[str] = (), *, with_hydra: bool = True) -> DictConfig:
    """As `train.py --config-dir sweeps --config-name <name>` composes it."""
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3"):
        search_path = f"hydra.searchpath=[file://{CONF_DIR}]"
        return compose(name, overrides=[search_path, *overrides], return_hydra_config=with_hydra)


def test_the_named_sweeps_are_there():
    names = {path.stem for path in SWEEP_FILES}
    assert {"beta_grid", "loss_beta_builtin", "seeds", "optuna_beta_lr"} <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda path: path.stem)
def test_a_sweep_composes_states_its_question_and_sweeps_real_keys(path: Path):
    assert path.read_text().startswith("# Question:")
    cfg = compose_sweep(path.stem)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = cfg.hydra.sweeper.params
    assert params, "a sweep with nothing to sweep"
    first_values = []
    for key, values in params.items():
        if "interval(" in str(values):  # a search space (Optuna): the key must exist
            assert OmegaConf.select(cfg, key) is not None, key
        else:
            first_values.append(f"{key}={str(values).split(',')[0]}")
    member = compose_sweep(path.stem, first_values, with_hydra=False)
    validate_config(member)


@pytest.mark.parametrize("launcher", ["slurm", "parallel"])
def test_the_launcher_configs_compose(launcher):
    cfg = compose_sweep("seeds", [f"hydra/launcher={launcher}"])
    target = cfg.hydra.launcher._target_
    assert target.endswith({"slurm": "SlurmLauncher", "parallel": "JoblibLauncher"}[launcher])


def test_the_optuna_search_optimises_a_metric_the_main_returns():
    cfg = compose_sweep("optuna_beta_lr")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.objective == "val/rewards/accuracy" and cfg.hydra.sweeper.direction == "maximize"


def test_the_wandb_sweep_spec_calls_train_py_with_hydra_overrides():
    spec = yaml.safe_load((SWEEPS_DIR / "wandb_agent" / "beta_loss.yaml").read_text())
    assert spec["program"] == "train.py" and "${args_no_hyphens}" in spec["command"]
    first = [f"{key}={values['values'][0]}" for key, values in spec["parameters"].items()]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        validate_config(compose("config", overrides=[*first, "logger=wandb"]))
    assert os.path.exists(PROJECT_ROOT / spec["program"])


def test_every_member_of_the_iterative_sweep_is_a_valid_three_round_run():
    cfg = compose_sweep("iterative")
    members = str(cfg.hydra.sweeper.params.experiment).split(",")
    runs = {}
    for member in members:
        member_cfg = compose_sweep("iterative", [f"experiment={member}"], with_hydra=False)
        validate_config(member_cfg, overrides=[f"experiment={member}"])
        runs[member] = (member_cfg.loss.name, member_cfg.online.rounds, member_cfg.online.reference)
    # Only a loss with a reference takes its starting policy as one; RFT has none.
    assert runs == {
        "iterative_rpo": ("rpo", 3, "previous"),
        "iterative_dpo": ("dpo", 3, "previous"),
        "online_rft": ("rft", 3, "sft"),
    }
