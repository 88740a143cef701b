"""The step FLOP counter against torch's `FlopCounterMode` on the first training step of tiny models."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from dpo_exp.cli import run
from dpo_exp.config import validate_config
from dpo_exp.training.flops import StepFlops
from dpo_exp.training.run import assemble_run
from tests.helpers import compose_config
from tests.integration.test_models import compose

LORA = "model.lora={r:4,alpha:8,dropout:0.0,target_modules:all-linear}"
# No recomputation (which the counter leaves out, as model FLOPs do): logits in one product.
PLAIN = ["speed.logits_chunk=null", "model.activation_checkpointing=false"]
CASES = {
    "dpo, shared-prompt rows": [],
    "dpo, padded rows": ["speed.share_prompt=false"],
    "dpo, packed rows": ["speed.pack=true", "data.options.num_examples=64", "data.batch_size=16"],
    "dpo, full logits": ["speed.share_prompt=false", "speed.head_on_completions=false"],
    "dpo, cached reference": ["reference.cache=true"],
    "simpo, no reference": ["loss=simpo"],
    "kto": ["loss=kto"],
    "kto, cached reference": ["loss=kto", "reference.cache=true"],
    "rft": ["loss=rft"],
    "lora, adapter-off reference": [LORA],
    "lora, padded rows": [LORA, "speed.share_prompt=false"],
}


def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU one SDPA runs
# here: give it theirs (the same shapes, the same products).
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward,
}


def counted_and_measured(cfg) -> tuple[float, float]:
    """(the counter's FLOPs, FlopCounterMode's) for one training step on the run's first batch."""
    spec = validate_config(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    parts = assemble_run(cfg)
    batch = next(iter(parts.datamodule.train_dataloader()))
    count = StepFlops.of(
        parts.policy, parts.reference, needs_reference=spec.needs_reference, paired=spec.paired
    )
    counted = count(batch, head_on_completions=parts.module.head_on_completions)
    parts.module.train()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as mode:
        parts.module.training_step(batch, 0).backward()
    return counted, float(mode.get_total_flops())


pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_counted_flops_equal_flop_counter_mode(overrides, tmp_path):
    cache_dir = [f"reference.cache_dir={tmp_path}/ref"] if "reference.cache=true" in overrides else []
    # Full logits have no chunks to switch off: logits_chunk would be refused as having no effect.
    full_logits = "speed.head_on_completions=false" in overrides
    plain = [setting for setting in PLAIN if not (full_logits and "logits_chunk" in setting)]
    cfg = compose_config([*overrides, *plain, *cache_dir])
    if cfg.reference.cache:  # a run fills the cache when it starts training; the step below reads it
        run(cfg.copy(), tmp_path / "filling")
    counted, measured = counted_and_measured(cfg)
    assert measured > 0
    print(f"counted/measured {counted / measured:.6f}")
    assert abs(counted - measured) <= 0.02 * measured, f"counted {counted:.4g}, measured {measured:.4g}"


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "pythia"])
def test_each_family_and_attention_kernel_counts_as_flop_counter_mode(
    family, attention, share_prompt, family_dirs
):
    """Qwen2: grouped-query attention and biases; GPT-2: Conv1D projections; eager: bmm attention."""
    overrides = [f"model.attn_implementation={attention}", f"speed.share_prompt={share_prompt}", *PLAIN]
    counted, measured = counted_and_measured(compose(family_dirs[family], family, *overrides))
    print(f"counted/measured {counted / measured:.6f}")
    assert abs(counted - measured) <= 0.02 * measured, f"counted {counted:.4g}, measured {measured:.4g}"


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_the_run_summary_counts_the_batches_it_trained_on_over_a_measured_peak(loss, tmp_path):
    overrides = [f"loss={loss}", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    summary = run(compose_config(overrides), tmp_path / "run")
    cfg = compose_config(overrides)
    spec = validate_config(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    parts = assemble_run(cfg)
    count = StepFlops.of(
        parts.policy, parts.reference, needs_reference=spec.needs_reference, paired=spec.paired
    )
    batches = iter(parts.datamodule.train_dataloader())
    expected = sum(count(next(batches), head_on_completions=True) for _ in range(2))
    assert 1e9 < summary["peak_flops"] < 1e16  # measured when the run started: a matrix product's FLOP/s
    counted = summary["mfu"] * summary["peak_flops"] * summary["train_time_s"]
    assert counted == pytest.approx(expected, rel=1e-6)
