"""Real model families by path, LoRA with the adapter-off reference, precision, export."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from torch.testing import assert_close
from transformers import AutoConfig, AutoModelForCausalLM

from dpo_exp.cli import run
from dpo_exp.config import validate_config
from dpo_exp.data.collate import IndexedItem, PairCollator, SharedPromptCollator
from dpo_exp.data.module import prepare_data
from dpo_exp.models.checks import ModelConfigError
from dpo_exp.models.loading import load_policy, load_reference, load_tokenizer
from dpo_exp.models.lora import REFERENCE_ADAPTER, TRAINED_ADAPTER, lora_config
from dpo_exp.models.scoring import score_batch, shared_prompt_supported
from dpo_exp.training.export import export_policy
from dpo_exp.training.module import PreferenceModule
from tests.conftest import tiny_llama_config
from tests.helpers import FAST_DATA, FAST_TRAINER, assemble, compose_config

LORA = "model.lora={r:4,alpha:8,dropout:0.0,target_modules:all-linear}"
TWO_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=1"]


def compose(family_dir: Path, family: str, *overrides: str):
    return compose_config(
        [*FAST_DATA, *FAST_TRAINER, f"model={family}", f"model.path={family_dir}", *overrides], fast=False
    )


def assemble_first_batch(cfg) -> tuple[PreferenceModule, dict[str, torch.Tensor]]:
    """The module as run() builds it, and its first training batch."""
    module, datamodule = assemble(cfg)
    return module, next(iter(datamodule.train_dataloader()))


def randomise_lora(model: PeftModel, seed: int = 1) -> None:
    """LoRA's B starts at zero (adapter = identity); give it values so the adapter changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def shortened(item: IndexedItem, *, keep: int) -> IndexedItem:
    """The item with at most `keep` tokens of its prompt and of each completion."""
    pair = item.record
    short = dataclasses.replace(
        pair,
        prompt_ids=pair.prompt_ids[:keep],
        chosen_ids=pair.chosen_ids[:keep],
        rejected_ids=pair.rejected_ids[:keep],
    )
    return IndexedItem(item.index, short)


def logps_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probs of every sequence in a batch of either layout (padded or shared-prompt rows)."""
    model.eval()
    with torch.no_grad():
        return score_batch(model, batch, "", head_on_completions=False)[0]


# -- families --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "pythia"])
def test_each_family_loads_by_path_trains_two_steps_and_exports(family, family_dirs, tmp_path):
    cfg = compose(family_dirs[family], family, *TWO_STEPS)
    summary = run(cfg, tmp_path)
    assert summary["global_step"] == 2
    assert math.isfinite(summary["metrics"]["val/loss"])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    initial = AutoModelForCausalLM.from_pretrained(family_dirs[family])
    assert type(exported) is type(initial)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(exported.state_dict().values(), initial.state_dict().values(), strict=True)
    ]
    assert any(changed), "the exported policy is the untrained model"


@pytest.mark.parametrize("share_prompt", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(family_dirs, share_prompt):
    gradients = {}
    for enabled in (False, True):
        cfg = compose(family_dirs["llama"], "llama", f"model.activation_checkpointing={enabled}")
        module, batch = assemble_first_batch(cfg)
        if share_prompt:
            items = prepare_data(cfg.data, load_tokenizer(cfg.model), paired=True).train.items[:8]
            batch = SharedPromptCollator(module.policy.config.pad_token_id)(items)
        assert module.policy.is_activation_checkpointing is enabled
        module.train()
        logps, _ = module.sequence_logps(module.policy, batch)
        logps.sum().backward()
        gradients[enabled] = torch.cat([p.grad.flatten() for p in module.policy.parameters()])
    assert_close(gradients[True], gradients[False], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "pythia"])
def test_shared_prompt_packed_rows_and_logit_chunks_give_the_padded_logps_and_gradients(
    family, attention, family_dirs
):
    cfg = compose(family_dirs[family], family, f"model.attn_implementation={attention}")
    module, _ = assemble_first_batch(cfg)
    assert shared_prompt_supported(module.policy)
    items = prepare_data(cfg.data, load_tokenizer(cfg.model), paired=True).train.items[:8]
    pad_id = module.policy.config.pad_token_id
    module.eval()  # GPT-2's dropout off: both layouts see the same function
    results = {}
    # Half the pairs cut short, so that two fit in the longest one's row when packed.
    items = [
        item if number % 2 else shortened(item, keep=2 + number // 4) for number, item in enumerate(items)
    ]
    collators = (PairCollator(pad_id), SharedPromptCollator(pad_id), SharedPromptCollator(pad_id, pack=True))
    for collate in collators:
        batch = collate(items)
        if getattr(collate, "pack", False):
            assert batch["input_ids"].shape[0] < len(items)  # pairs did share rows
        # (head on completions, logits chunk): full logits; head on all scored positions; 5 at a time
        for head_on_completions, chunk in ((False, None), (True, None), (True, 5)):
            module.policy.zero_grad()
            logps, ntokens = score_batch(
                module.policy, batch, head_on_completions=head_on_completions, logits_chunk=chunk
            )
            (logps * torch.linspace(-1, 1, logps.shape[0])).sum().backward()
            gradients = torch.cat([p.grad.flatten() for p in module.policy.parameters()])
            results[repr(collate), head_on_completions, chunk] = (logps.detach(), ntokens, gradients)
    padded = results[repr(PairCollator(pad_id)), False, None]
    for key, (logps, ntokens, gradients) in results.items():
        assert_close(logps, padded[0], rtol=1e-5, atol=1e-5, msg=str(key))
        assert_close(ntokens, padded[1], msg=str(key))
        assert_close(gradients, padded[2], rtol=1e-4, atol=1e-5, msg=str(key))


def test_flash_or_sliding_window_attention_keeps_one_row_per_sequence(family_dirs):
    cfg = compose(family_dirs["qwen2"], "qwen2")
    module, _ = assemble_first_batch(cfg)
    module.policy.config.layer_types = ["sliding_attention"] * module.policy.config.num_hidden_layers
    assert not shared_prompt_supported(module.policy)
    module.policy.config._attn_implementation = "flash_attention_2"
    assert not shared_prompt_supported(module.policy)


# -- LoRA ------------------------------------------------------------------------------------


def test_lora_with_activation_checkpointing_reaches_the_first_layer(family_dirs):
    # Frozen embeddings give checkpointed layers no input that requires grad; the adapters must still learn.
    cfg = compose(family_dirs["llama"], "llama", LORA, "model.activation_checkpointing=true")
    module, batch = assemble_first_batch(cfg)
    assert module.policy.base_model.model.is_activation_checkpointing
    module.train()
    module.sequence_logps(module.policy, batch)[0].sum().backward()
    first_layer = [p for n, p in module.policy.named_parameters() if "layers.0." in n and "lora_B" in n]
    assert first_layer and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first_layer)


def test_adapter_off_reference_equals_a_separately_loaded_base(family_dirs):
    # GPT-2 has dropout 0.1: the reference must be computed in eval mode even while training.
    cfg = compose(family_dirs["gpt2"], "gpt2", LORA)
    module, batch = assemble_first_batch(cfg)
    assert module.reference is None and isinstance(module.policy, PeftModel)
    randomise_lora(module.policy)
    module.train()

    reference_logps = module.reference_logps(batch)

    base = AutoModelForCausalLM.from_pretrained(family_dirs["gpt2"])
    assert_close(reference_logps, logps_of(base, batch), rtol=1e-5, atol=1e-5)
    assert module.policy.training, "training mode is restored after the reference forward"
    policy_logps = logps_of(module.policy, batch)
    assert (policy_logps - reference_logps).abs().max() > 1e-2, "the adapter is back on"


def test_lora_optimises_only_the_adapter(family_dirs):
    module, _ = assemble(compose(family_dirs["llama"], "llama", LORA))
    # What configure_optimizers reads of the trainer.
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "precision": "32-true"})()
    optimizer = module.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in module.policy.named_parameters()}
    optimised = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    assert optimised and all("lora_" in name for name in optimised)


@pytest.fixture
def sft_adapter(family_dirs, tmp_path) -> Path:
    """A saved LoRA adapter on the tiny Llama, with non-zero B, standing in for an SFT LoRA."""
    base = AutoModelForCausalLM.from_pretrained(family_dirs["llama"])
    options = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    adapter = get_peft_model(base, lora_config(options))
    randomise_lora(adapter, seed=2)
    adapter.save_pretrained(tmp_path / "sft_adapter")
    return tmp_path / "sft_adapter"


def test_starting_adapter_as_reference_equals_base_plus_that_adapter(family_dirs, sft_adapter):
    cfg = compose(
        family_dirs["llama"], "llama", f"model.adapter_path={sft_adapter}", "model.adapter_reference=adapter"
    )
    module, batch = assemble_first_batch(cfg)
    module.train()
    reference_logps = module.reference_logps(batch)

    base = AutoModelForCausalLM.from_pretrained(family_dirs["llama"])
    sft_logps = logps_of(PeftModel.from_pretrained(base, sft_adapter), batch)
    assert_close(reference_logps, sft_logps, rtol=1e-5, atol=1e-5)
    base_logps = logps_of(AutoModelForCausalLM.from_pretrained(family_dirs["llama"]), batch)
    assert (reference_logps - base_logps).abs().max() > 1e-2, "the reference is the adapter, not the base"
    # After the reference forward the trained adapter is active and trainable, the reference copy frozen.
    assert module.policy.active_adapter == TRAINED_ADAPTER
    trainable = {n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert trainable and all(f".{TRAINED_ADAPTER}." in n for n in trainable)
    assert any(f".{REFERENCE_ADAPTER}." in n for n, _ in module.policy.named_parameters())

    # One optimiser step moves the policy, not the reference.
    optimizer = torch.optim.SGD([p for p in module.policy.parameters() if p.requires_grad], lr=1.0)
    _, output, _ = module._paired_step(batch)
    output.loss.mean().backward()
    optimizer.step()
    assert_close(module.reference_logps(batch), sft_logps, rtol=1e-5, atol=1e-5)
    assert (logps_of(module.policy, batch) - sft_logps).abs().max() > 1e-3


def test_starting_adapter_with_base_reference(family_dirs, sft_adapter):
    cfg = compose(
        family_dirs["llama"], "llama", f"model.adapter_path={sft_adapter}", "model.adapter_reference=base"
    )
    module, batch = assemble_first_batch(cfg)
    base_logps = logps_of(AutoModelForCausalLM.from_pretrained(family_dirs["llama"]), batch)
    assert_close(module.reference_logps(batch), base_logps, rtol=1e-5, atol=1e-5)


def test_training_from_an_adapter_exports_the_moved_adapter(family_dirs, sft_adapter, tmp_path):
    cfg = compose(
        family_dirs["llama"],
        "llama",
        f"model.adapter_path={sft_adapter}",
        "model.adapter_reference=adapter",
        "export.lora=adapter",
        *TWO_STEPS,
    )
    summary = run(cfg, tmp_path / "run")
    assert summary["global_step"] == 2
    # The exported adapter is the trained one alone, and loads (base by path) with transformers.
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert isinstance(exported, torch.nn.Module)
    trained = load_file(tmp_path / "run" / "model" / "adapter_model.safetensors")
    start = load_file(sft_adapter / "adapter_model.safetensors")
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in start)


# -- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lora_export", ["merged", "adapter"])
def test_exported_lora_policy_loads_with_the_same_outputs(lora_export, family_dirs, tmp_path):
    cfg = compose(family_dirs["qwen2"], "qwen2", LORA, f"export.lora={lora_export}")
    module, batch = assemble_first_batch(cfg)
    randomise_lora(module.policy)
    expected = logps_of(module.policy, batch)
    tokenizer = load_tokenizer(cfg.model)
    summary = {"global_step": 0, "metrics": {"val/loss": 0.5}}
    export_policy(module.policy, tokenizer, tmp_path / "model", cfg=cfg, summary=summary)

    files = {path.name for path in (tmp_path / "model").iterdir()}
    weights = "model.safetensors" if lora_export == "merged" else "adapter_model.safetensors"
    assert {weights, "tokenizer.json", "README.md"} <= files
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert_close(logps_of(loaded, batch), expected, rtol=1e-4, atol=1e-4)
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"base_model: {family_dirs['qwen2']}" in card
    assert "| `val/loss` | 0.5 |" in card and "target_modules: all-linear" in card


# -- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_bf16_precision_trains_two_steps_on_cpu(precision, family_dirs, tmp_path):
    cfg = compose(family_dirs["llama"], "llama", f"trainer.precision={precision}", *TWO_STEPS)
    summary = run(cfg, tmp_path)
    assert summary["global_step"] == 2 and math.isfinite(summary["metrics"]["val/loss"])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype="auto")
    expected = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert next(exported.parameters()).dtype == expected


# -- the reference's dtype -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny Llama saved in bfloat16: its config.json names that dtype."""
    directory = tmp_path_factory.mktemp("tiny_llama_bf16")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer))
    model.to(torch.bfloat16).save_pretrained(directory)
    char_tokenizer.save_pretrained(directory)
    assert AutoConfig.from_pretrained(directory).dtype == torch.bfloat16
    return directory


@pytest.mark.parametrize(
    ("dtype", "ref_dtype", "expected"),
    [
        ("float32", "null", torch.float32),  # null: the policy's dtype, not the checkpoint's bfloat16
        ("bfloat16", "null", torch.bfloat16),
        ("float32", "float16", torch.float16),
    ],
)
def test_a_separate_reference_loads_in_ref_dtype_else_the_policy_dtype(
    family_dirs, bf16_model_dir, dtype, ref_dtype, expected
):
    overrides = [f"model.ref_path={bf16_model_dir}", f"model.dtype={dtype}", f"model.ref_dtype={ref_dtype}"]
    cfg = compose(family_dirs["llama"], "llama", *overrides)
    reference = load_reference(cfg.model, load_policy(cfg.model, load_tokenizer(cfg.model)))
    assert {parameter.dtype for parameter in reference.parameters()} == {expected}


# -- config checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([LORA.replace("r:4", "r:0")], "model.lora.r must be a positive"),
        (["model.lora={r:4,alpha:8,dropout:0.0}"], "missing: ['target_modules']"),
        (["model.lora={r:4,alpha:8,dropout:0.0,target_modules:x,rank:2}"], "unknown: ['rank']"),
        (["model.adapter_path=/no/adapter", "model.adapter_reference=base"], "no adapter_config.json in"),
        (["model.adapter_reference=base"], "no model.adapter_path"),
        (["model.quantization=4bit"], "model.quantization trains through LoRA"),
        ([LORA, "model.quantization=4bit"], "model.quantization needs"),
        ([LORA, "model.quantization=8bit"], "model.quantization must be null or one of"),
        ([LORA, "model.quantization=4bit", "trainer.precision=bf16-true"], "would cast the 4-bit weights"),
        (["export.lora=adapter"], "export.lora=adapter exports a LoRA adapter, but model.lora is not set"),
        (["export.lora=folded"], "export.lora must be one of"),
    ],
)
def test_bad_model_settings_fail_before_any_model_loads(overrides, message, family_dirs, tmp_path):
    cfg = compose(family_dirs["llama"], "llama", *overrides)
    with pytest.raises(ValueError) as raised:
        run(cfg, tmp_path)
    assert message in str(raised.value)
    assert not (tmp_path / "model").exists()


def test_starting_adapter_needs_an_explicit_reference(family_dirs, sft_adapter, tmp_path):
    cfg = compose(family_dirs["llama"], "llama", f"model.adapter_path={sft_adapter}")
    with pytest.raises(ValueError, match="model.adapter_reference must say what the reference is"):
        validate_config(cfg)


def test_a_model_whose_vocabulary_is_smaller_than_its_tokenizers_is_refused(tmp_path, char_tokenizer):
    folder = tmp_path / "short_vocab"
    AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer, vocab_size=64)).save_pretrained(folder)
    char_tokenizer.save_pretrained(folder)
    cfg = compose_config(["data=synthetic", "model=hf", f"model.path={folder}"], fast=False)
    with pytest.raises(ModelConfigError) as refused:
        load_policy(cfg.model, load_tokenizer(cfg.model))
    message = str(refused.value)
    assert message.startswith(
        f"model.path: the model's vocabulary has 64 tokens but the tokenizer of {folder}"
    )
    assert "\n" not in message
