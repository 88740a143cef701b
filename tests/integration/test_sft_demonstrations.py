"""SFT on demonstrations (data=demonstrations) is a training run of loss=rft: no reference model,
SFT's learning rate for a loaded model, settings it would ignore refused, and it learns (the
validation NLL per completion token falls from its step-0 value)."""

from __future__ import annotations

import pytest

from dpo_exp.cli import run
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.training.metrics_file import METRICS, read_metrics
from dpo_exp.training.result import run_result
from tests.conftest import DEMONSTRATIONS
from tests.helpers import FAST_MODEL, FAST_TRAINER, assemble, compose_config

SFT = ["data=demonstrations", f"data.train_path={DEMONSTRATIONS}", "data.val_size=8", "data.batch_size=8"]


def sft_config(*overrides: str, model: tuple[str, ...] = tuple(FAST_MODEL)):
    return compose_config([*model, *FAST_TRAINER, *SFT, *overrides], fast=False)


def test_demonstrations_train_by_the_nll_of_completions_with_no_reference_model():
    cfg = sft_config()
    assert cfg.loss.name == "rft" and validate_config(cfg).name == "rft"
    module, datamodule = assemble(cfg)
    assert module.reference is None and not module.loss_spec.needs_reference
    batch = next(iter(datamodule.train_dataloader()))
    assert bool(batch["desirable"].all()) and not any(key.startswith("kl_") for key in batch)


def test_a_loaded_model_fine_tunes_at_sfts_learning_rate(tiny_model_dir):
    loaded = sft_config(model=("model=hf", f"model.path={tiny_model_dir}"))
    assert loaded.optim.lr == 2e-5  # TRL's SFTConfig default, not DPO's 1e-6
    assert sft_config().optim.lr == 5e-4  # the tiny model built from random weights


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss=dpo", "loss=dpo: data=demonstrations holds demonstrations (prompt, completion)"),
        ("loss=kto", "loss=kto needs labelled examples (data=unpaired)"),
        ("beta=0.5", "beta: loss=rft has no beta"),
        ("+loss.label_smoothing=0.1", "loss 'rft' has no option 'label_smoothing'"),
        ("reference.cache=true", "reference.cache: has no effect: loss=rft uses no reference model"),
        ("model.ref_dtype=bfloat16", "model.ref_dtype: has no effect: loss=rft uses no reference model"),
        ("sft.steps=10", "sft.steps: data=demonstrations is a fixed dataset"),
    ],
)
def test_settings_sft_would_not_use_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(sft_config(override), overrides=[override])


def test_sft_lowers_the_validation_nll_per_completion_token(tmp_path):
    cfg = sft_config("trainer.max_steps=20", "trainer.val_check_interval=10", "data.max_length=96",
                     "data.max_prompt_length=48")  # fmt: skip
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path / METRICS)
    validated = metrics.dropna(subset=["val/nll_per_token"]).set_index("step")["val/nll_per_token"]
    start, end = validated.iloc[0], validated.iloc[-1]
    assert len(validated) == 3 and validated.index[0] == 0  # at step 0, at 10 and at the end
    assert end < start - 0.3  # from about ln(vocabulary) = 4.6 toward the data's entropy
    assert summary["metrics"]["val/nll_per_token"] == pytest.approx(end)
    assert "val/rewards/accuracy" not in summary["metrics"]  # nothing is ranked
    shown = {
        label.strip(): value
        for label, _, value in (line.rpartition("  ") for line in run_result(cfg, summary, 1.0).splitlines())
    }
    assert shown["validation NLL per completion token, step 0"].strip() == f"{start:.4g}"
    assert shown["validation NLL per completion token, step 20"].strip() == f"{end:.4g}"
