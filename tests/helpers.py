"""Composing the project's Hydra config in tests, as the CLI would."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dpo_exp.cli import CONF_DIR

# Small and fast: a 2-layer 32-wide model and a few dozen steps' worth of data.
FAST_MODEL = [
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
]
FAST_DATA = [
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
# One preference run on `data`, not the built-in pipeline (the default config's `task`).
SINGLE_RUN = ["~task"]
FAST = SINGLE_RUN + FAST_MODEL + FAST_DATA + FAST_TRAINER


def compose_config(overrides: list[str] | None = None, *, fast: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=(FAST if fast else []) + list(overrides or []))
