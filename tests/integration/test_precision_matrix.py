"""Every precision a user trains in, with the reference cache, LoRA and packed rows, each starting
where it must: a run from its reference starts at log-ratio 0 within its dtype's rounding, and its
loss at the loss's value there. The fast tier runs each precision once with every switch on; the
slow tier the whole product. (DDP for each precision: tests/e2e/test_distributed.py.)"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dpo_exp.cli import run
from tests.helpers import compose_config

PRECISIONS = {
    "32-true": ["trainer.precision=32-true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "bf16-true": ["trainer.precision=bf16-true"],
    "bf16 weights": ["trainer.precision=32-true", "model.dtype=bfloat16"],
}
SWITCHES = {
    "cache": ["reference.cache=true"],
    "lora": ["model.lora={r:4,alpha:8,dropout:0.0,target_modules:all-linear}"],
    "pack": ["speed.pack=true", "data.batch_size=16"],
}
TWO_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2", "beta=0.5"]


def matrix() -> list:
    cases = []
    for precision, on in itertools.product(
        PRECISIONS, itertools.product([False, True], repeat=len(SWITCHES))
    ):
        switches = [name for name, chosen in zip(SWITCHES, on, strict=True) if chosen]
        marks = [] if len(switches) == len(SWITCHES) else [pytest.mark.slow]
        cases.append(pytest.param(precision, switches, id="-".join([precision, *switches]), marks=marks))
    return cases


@pytest.mark.parametrize(("precision", "switches"), matrix())
def test_a_run_from_its_reference_starts_at_its_loss_at_zero(tmp_path: Path, precision, switches):
    overrides = [*PRECISIONS[precision], *TWO_STEPS]
    overrides += [setting for switch in switches for setting in SWITCHES[switch]]
    if "reference.cache=true" in overrides:  # the cache folder is a setting of the cache only
        overrides.append(f"reference.cache_dir={tmp_path / 'cache'}")
    summary = run(compose_config(overrides), tmp_path / "run")  # stops on a step-0 mismatch
    figures = summary["step_zero"]
    assert figures is not None  # the invariant was checked, and held within the dtype's tolerance
    # DPO's loss moves by at most β/2 per unit of its margin, a sum of two log-ratios.
    assert abs(figures["loss"] - figures["loss_at_zero"]) <= 0.5 * figures["max_abs_logratio"] + 1e-6
    if "cache" in switches:
        assert summary["reference_cached"] and figures["max_abs_logratio"] == 0  # scored as the policy runs
    assert summary["global_step"] == 2
