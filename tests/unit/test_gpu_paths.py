"""What a GPU run needs of code that the CPU never exercises, with CUDA's calls stood in for."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from dpo_exp.devices import compute_dtype, weights_dtype
from dpo_exp.experiment import stages
from dpo_exp.experiment.generation import in_batches_that_fit, sampling_under_determinism
from dpo_exp.experiment.stages import load_model_folder
from dpo_exp.models.lora import quantization_config
from dpo_exp.training import telemetry
from dpo_exp.training.checkpoints import restore_rng_state, rng_state
from dpo_exp.training.flops import linear_weights
from dpo_exp.training.telemetry import TokenThroughput, best_seconds_per_call
from tests.helpers import without_launchers


def test_checkpoints_keep_and_restore_every_gpus_generator(monkeypatch):
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = rng_state()
    assert state["cuda"] is states
    restore_rng_state(state)
    assert restored == [states]


def test_a_gpu_checkpoint_resumes_on_a_machine_without_one(monkeypatch):
    state = {**rng_state(), "cuda": [torch.zeros(2, dtype=torch.uint8)]}
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    restore_rng_state(state)  # no GPU here: the CPU generators are restored, CUDA's left alone
    assert restored == []


def test_step_time_on_a_gpu_waits_for_its_kernels(monkeypatch):
    """A step's time ends when its kernels end: without a sync, tokens/s on a GPU counts only
    the Python that queued them."""
    clock = iter([10.0, 10.5])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    device = torch.device("cuda", 1)
    module = SimpleNamespace(device=device, head_on_completions=True, log_dict=lambda *a, **k: None)
    trainer = SimpleNamespace(global_step=1)
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    throughput = TokenThroughput()
    throughput.on_train_batch_start(trainer, module, batch, 0)
    throughput.on_train_batch_end(trainer, module, None, batch, 0)
    assert synced == [device] and throughput.train_seconds == 0.5


def test_qlora_puts_each_srun_task_on_its_own_gpu(monkeypatch):
    """srun states a task's GPU as SLURM_LOCALID; LOCAL_RANK is not set there."""
    for name in set(os.environ) - set(without_launchers(dict(os.environ))):
        monkeypatch.delenv(name)
    slurm = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_PROCID": "3"}
    for name, value in {**slurm, "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NAME": "dpo"}.items():
        monkeypatch.setenv(name, value)
    model_cfg = OmegaConf.create({"quantization": "4bit"})
    assert quantization_config(model_cfg)["device_map"] == {"": 1}
    monkeypatch.delenv("SLURM_NTASKS"), monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's way
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_NNODES", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name)
    assert quantization_config(model_cfg)["device_map"] == {"": 1}


def test_a_peak_is_timed_over_many_products_between_two_syncs():
    """20 products then one sync: a GPU's launch and sync costs are spread over the products, not
    timed with each. The fake clock moves 1 s per product and 0.5 s per sync."""
    now, events = [0.0], []

    def call():
        events.append("mm")
        now[0] += 1.0

    def synchronize():
        events.append("sync")
        now[0] += 0.5

    per_call = best_seconds_per_call(call, synchronize, seconds=0.0, calls=20, clock=lambda: now[0])
    assert events == ["mm", "sync", *["mm"] * 20, "sync"]  # the warm-up, then one timing
    assert per_call == 20.5 / 20


@pytest.mark.parametrize(
    ("precision", "model_dtype", "expected"),
    [
        ("32-true", "float32", torch.float32),
        ("32-true", "bfloat16", torch.bfloat16),
        ("bf16-mixed", "float32", torch.bfloat16),
        ("bf16-true", "float32", torch.bfloat16),
        ("16-mixed", "float32", torch.float16),
    ],
)
def test_the_peak_is_measured_in_the_dtype_the_run_computes_in(precision, model_dtype, expected):
    assert compute_dtype(precision, model_dtype) == expected


def test_the_peak_is_measured_on_the_ranks_own_device_once_the_module_is_placed(monkeypatch):
    asked = []
    monkeypatch.setattr(telemetry, "measure_matmul_peak", lambda **how: asked.append(how) or 1e12)
    throughput = TokenThroughput(compute_dtype=torch.bfloat16)
    throughput.on_fit_start(SimpleNamespace(), SimpleNamespace(device=torch.device("cuda", 3)))
    assert asked == [{"dtype": torch.bfloat16, "device": torch.device("cuda", 3)}]
    assert throughput.peak_flops == 1e12
    given = TokenThroughput(peak_flops=989e12)
    given.on_fit_start(SimpleNamespace(), SimpleNamespace(device=torch.device("cuda", 3)))
    assert len(asked) == 1 and given.peak_flops == 989e12  # `speed.peak_flops` set: nothing measured


def test_a_batch_the_accelerator_has_no_memory_for_is_halved_and_the_rest_keep_the_size():
    sizes = []

    def run(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [row * 10 for row in batch]

    assert in_batches_that_fit(list(range(10)), 8, run) == [row * 10 for row in range(10)]
    assert sizes == [8, 4, 2, 2, 2, 2, 2]  # every row once, in order, at the size that fits


def test_one_row_that_does_not_fit_is_the_error():
    def run(batch):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        in_batches_that_fit([1, 2], 2, run)


def test_sampling_under_lightnings_determinism_warns_where_cuda_would_refuse():
    """top-p's cumsum has no deterministic CUDA kernel: with deterministic algorithms on, torch
    raises there; sampling switches that to a warning and puts the setting back."""
    torch.use_deterministic_algorithms(True)
    try:
        with sampling_under_determinism():
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    with sampling_under_determinism():
        assert not torch.are_deterministic_algorithms_enabled()


def test_the_experiments_sampling_model_goes_to_the_accelerator(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(stages, "device_type", lambda accelerator: "meta")  # a device that is not the CPU
    _, model = load_model_folder(tiny_model_dir)
    assert {parameter.device.type for parameter in model.parameters()} == {"meta"}


def test_a_quantized_layer_counts_the_weights_it_multiplies_by_not_the_bytes_it_stores():
    layer = torch.nn.Linear(8, 4, bias=False)
    assert linear_weights(layer) == 32
    # bitsandbytes' 4-bit layer keeps in_features and out_features and stores its weight packed.
    layer.weight = torch.nn.Parameter(torch.zeros(16, 1, dtype=torch.uint8), requires_grad=False)
    assert linear_weights(layer) == 32


@pytest.mark.parametrize(
    ("precision", "model_dtype", "expected"),
    [
        ("32-true", "float32", torch.float32),
        ("32-true", "bfloat16", torch.bfloat16),
        ("bf16-mixed", "float32", torch.float32),  # autocast computes in bf16; the weights stay fp32
        ("bf16-true", "float32", torch.bfloat16),
        ("16-true", "float32", torch.float16),
    ],
)
def test_the_weights_are_kept_in_the_dtype_a_true_precision_casts_them_to(precision, model_dtype, expected):
    assert weights_dtype(precision, model_dtype) == expected
