"""The device a run computes on and the precision that fits it, with CUDA's answers stood in for."""

from __future__ import annotations

import pytest
import torch

from dpo_exp.devices import allow_tf32, describe_device, device_type, run_precision
from dpo_exp.experiment import stages
from dpo_exp.experiment.stages import Task, build_sft, sft_settings
from tests.helpers import SMALL_EXPERIMENT, compose_config


@pytest.fixture
def gpus(monkeypatch):
    """A machine with 8 CUDA GPUs; `bf16` says whether they have bf16 units. The TF32 switches
    (process-wide flags, settable on any build) start off and are put back afterwards."""

    def machine(bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield machine
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize(
    ("bf16", "accelerator", "expected"),
    [
        (True, "auto", "bf16-mixed"),
        (True, "gpu", "bf16-mixed"),
        (False, "auto", "32-true"),
        (True, "cpu", "32-true"),
    ],
)
def test_auto_precision_on_a_gpu_box_is_bf16_mixed_where_the_gpus_have_bf16(
    gpus, bf16, accelerator, expected
):
    gpus(bf16)
    assert run_precision("auto", accelerator) == expected
    assert run_precision("bf16-true", accelerator) == "bf16-true"  # a precision given is kept


def test_auto_precision_on_a_cpu_is_fp32():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert device_type("auto") == "cpu" and run_precision("auto", "auto") == "32-true"


def test_tf32_is_allowed_for_fp32_products_on_a_gpu_only(gpus):
    assert not allow_tf32("cpu", True) and not torch.backends.cuda.matmul.allow_tf32
    gpus()
    assert (
        allow_tf32("auto", True) and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    )
    assert describe_device("32-true", "auto", 8) == "32-true (TF32 products) on cuda ×8"
    assert describe_device("bf16-mixed", "auto", 1) == "bf16-mixed on cuda"
    assert not allow_tf32("auto", False) and not torch.backends.cuda.matmul.allow_tf32  # speed.tf32=false
    assert describe_device("32-true", "cpu", "auto") == "32-true on cpu"


class TrainerMade(Exception):
    pass


def test_the_sft_stage_trains_on_one_device_of_a_gpu_box(gpus, monkeypatch, tmp_path):
    """Lightning's `devices=auto` would take all 8 GPUs with DDP, its ranks waiting on the lock
    the stage's process holds."""
    cfg = compose_config(SMALL_EXPERIMENT, fast=False)
    task = Task.from_config(cfg.task)
    made = {}

    def trainer(**arguments):
        made.update(arguments)
        raise TrainerMade

    monkeypatch.setattr(stages.L, "Trainer", trainer)
    with pytest.raises(TrainerMade):
        build_sft(sft_settings(cfg, task), task, tmp_path, progress_bar=False, log_every=10)
    assert made["devices"] == 1
