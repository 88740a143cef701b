"""`sample.backend=vllm` against a stand-in `vllm` module (vLLM itself needs a CUDA GPU): the call the
sample stage makes, its outputs turned into the HF path's token ids and cut flags, the refusals, and
the stage's key."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dpo_exp.config import ConfigError, validate_config
from dpo_exp.experiment.cache import stage_key
from dpo_exp.experiment.generation import ended
from dpo_exp.experiment.stages import draw_samples, sample_settings
from dpo_exp.experiment.task import Task, container
from dpo_exp.experiment.vllm_sampling import completions_of
from tests.helpers import SMALL_EXPERIMENT, compose_config

EOS = 2  # any id: completions_of is told which one is EOS
VLLM = [*SMALL_EXPERIMENT, "sample.backend=vllm"]


@dataclass
class Completion:  # what the sample stage reads of vLLM's CompletionOutput
    index: int
    token_ids: list[int]
    finish_reason: str


@dataclass
class Request:  # ... and of its RequestOutput
    outputs: list[Completion]


def test_a_sample_that_stopped_at_max_tokens_without_eos_is_cut_and_one_that_ended_keeps_its_eos():
    outputs = [
        Request([Completion(1, [7, 8, 9], "length"), Completion(0, [5, EOS], "stop")]),  # out of order
        Request([Completion(0, [6, 6, EOS], "length"), Completion(1, [EOS], "stop")]),
    ]
    samples, cut = completions_of(outputs, EOS)
    # Prompt 0: sample 0 ended with EOS (kept, as generate's ids keep it); sample 1 hit max_tokens.
    # Prompt 1: EOS as the last allowed token ended the sample; an empty answer is EOS alone.
    assert samples == [[[5, EOS], [7, 8, 9]], [[6, 6, EOS], [EOS]]]
    assert cut == [[False, True], [False, False]]
    # The same flags the HF path computes from the ids (`ended`: the last id is EOS).
    assert cut == [[not ended(ids, EOS) for ids in row] for row in samples]


def test_ids_after_eos_are_dropped_as_the_hf_path_drops_them():
    samples, cut = completions_of([Request([Completion(0, [4, EOS, 9, 9], "stop")])], EOS)
    assert samples == [[[4, EOS]]] and cut == [[False]]


def test_a_sample_vllm_did_not_finish_stops_the_stage():
    with pytest.raises(RuntimeError, match="abort"):
        completions_of([Request([Completion(0, [4], "abort")])], EOS)


# -- the call the stage makes, on a stand-in vllm ----------------------------------------------


class FakeVllm:
    """A `vllm` module that records the engine's arguments and every generate call, and answers
    each prompt's n samples alternately: the problem's answer then EOS ("stop"), and zeros up to
    max_tokens ("length")."""

    def __init__(self, tokenizer):
        self.engines, self.calls, self.tokenizer = [], [], tokenizer
        self.module = types.ModuleType("vllm")
        self.module.LLM = self.llm
        self.module.SamplingParams = lambda **kwargs: dict(kwargs)
        self.module.inputs = types.ModuleType("vllm.inputs")
        self.module.inputs.TokensPrompt = lambda **kwargs: dict(kwargs)

    def llm(self, **kwargs):
        self.engines.append(kwargs)
        return types.SimpleNamespace(generate=self.generate)

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        eos = self.tokenizer.eos_token_id
        outputs = []
        for param in params:
            completions = []
            for index in range(param["n"]):
                if index % 2 == 0:
                    completions.append(
                        Completion(
                            index, self.tokenizer.encode("12", add_special_tokens=False) + [eos], "stop"
                        )
                    )
                else:
                    completions.append(
                        Completion(
                            index, [self.tokenizer.convert_tokens_to_ids("0")] * param["max_tokens"], "length"
                        )
                    )
            outputs.append(Request(completions))
        return outputs


def a_gpu_is_visible(monkeypatch):
    """CUDA's answers on a machine with a GPU (without bf16 units: the precision stays fp32)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)


@pytest.fixture
def fake_vllm(monkeypatch, char_tokenizer):
    fake = FakeVllm(char_tokenizer)
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake.module.inputs)
    return fake


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("dtype", "expected"), [("bfloat16", "bfloat16"), ("null", "float32")])
def test_the_stage_samples_the_model_folder_with_vllm_as_configured(
    fake_vllm, tiny_model_dir, char_tokenizer, tmp_path, dtype, expected
):
    overrides = [
        "sample.num_samples=3",
        "sample.temperature=0.7",
        "sample.top_p=0.9",
        "task.max_new_tokens=5",
    ]
    cfg = compose_config(
        [*VLLM, *overrides, f"sample.vllm_dtype={dtype}", "sample.vllm_gpu_memory_utilization=0.6"],
        fast=False,
    )
    task = Task.from_config(cfg.task)
    draw_samples(sample_settings(cfg, task, "sft-key", 11), task, tiny_model_dir, tmp_path)

    # One engine on the SFT folder, in the set dtype (null: the folder's own, fp32 here), seeded.
    assert fake_vllm.engines == [
        {
            "model": str(tiny_model_dir),
            "dtype": expected,
            "seed": 11,
            "gpu_memory_utilization": 0.6,
            "generation_config": "vllm",
        }
    ]
    # Two calls (train, then val): the prompts' token ids as training encodes them, one
    # SamplingParams a prompt with the stage's settings and a seed of its own.
    assert len(fake_vllm.calls) == 2
    seeds = []
    for (prompts, params), split in zip(fake_vllm.calls, ("sample", "sample_val"), strict=True):
        problems = task.problems[split]
        assert prompts == [{"prompt_token_ids": char_tokenizer.encode(p.prompt)} for p in problems]
        assert {(p["n"], p["temperature"], p["top_p"], p["max_tokens"]) for p in params} == {(3, 0.7, 0.9, 5)}
        seeds += [p["seed"] for p in params]
    assert seeds == [11 + 3 * index for index in range(len(seeds))]  # sample j of a prompt: seed + j

    # The files are the HF path's: decoded completions, the one that hit max_tokens marked cut.
    for suffix in ("", "_val"):
        items = read_jsonl(tmp_path / f"samples{suffix}.jsonl")
        assert {tuple(item["completions"]) for item in items} == {("12", "00000", "12")}
        assert {tuple(item["cut"]) for item in items} == {(False, True, False)}
        cut_rows = [row for row in read_jsonl(tmp_path / f"pairs{suffix}.jsonl") if row.get("rejected_cut")]
        assert cut_rows and all(row["rejected"] == "00000" for row in cut_rows)


# -- refusals at the entry ----------------------------------------------------------------------


def test_vllm_without_vllm_installed_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(
        ConfigError, match=r"^sample.backend=vllm: vLLM is not installed \(pip install 'dpo_exp\[vllm\]'"
    ):
        validate_config(compose_config(VLLM, fast=False), overrides=VLLM)


def test_vllm_without_a_cuda_gpu_is_refused(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match="^sample.backend=vllm: vLLM samples on a CUDA GPU and none is visible"
    ):
        validate_config(compose_config(VLLM, fast=False), overrides=VLLM)


def test_vllm_installed_on_a_gpu_validates(monkeypatch, fake_vllm):
    a_gpu_is_visible(monkeypatch)
    validate_config(compose_config(VLLM, fast=False), overrides=VLLM)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+model.lora={r:8,alpha:16}"], "sample.backend=vllm: with LoRA the SFT model is saved as an"),
        (["sample.batch_size=64"], "sample.batch_size: has no effect: sample.backend=vllm batches"),
        (["sample.vllm_gpu_memory_utilization=1.5"], "sample.vllm_gpu_memory_utilization must be in (0, 1]"),
    ],
)
def test_vllm_settings_that_cannot_work_are_refused(monkeypatch, fake_vllm, overrides, message):
    a_gpu_is_visible(monkeypatch)
    launch = [*VLLM, *overrides]
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(launch, fast=False), overrides=launch)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("override", ["sample.vllm_dtype=bfloat16", "sample.vllm_gpu_memory_utilization=0.5"])
def test_vllm_settings_under_the_hf_backend_are_refused(override):
    launch = [*SMALL_EXPERIMENT, override]
    with pytest.raises(ConfigError, match=f"^{override.split('=')[0]}: has no effect: sample.backend=hf"):
        validate_config(compose_config(launch, fast=False), overrides=launch)


# -- the stage's key ----------------------------------------------------------------------------


def sample_key(overrides: list[str]) -> str:
    cfg = compose_config(overrides, fast=False)
    return stage_key(container(sample_settings(cfg, Task.from_config(cfg.task), "sft-key", 0)))


def test_the_backend_is_in_the_sample_stages_key_and_hf_keys_are_unchanged():
    hf = sample_key(SMALL_EXPERIMENT)
    assert sample_key(VLLM) != hf
    assert sample_key([*VLLM, "sample.vllm_dtype=bfloat16"]) != sample_key(VLLM)
    # hf's settings hold no key only vLLM reads: a cache built before the choice existed is reused.
    cfg = compose_config(SMALL_EXPERIMENT, fast=False)
    section = sample_settings(cfg, Task.from_config(cfg.task), "sft-key", 0).sample
    assert sorted(section) == ["batch_size", "min_margin", "num_samples", "pair_mode", "temperature", "top_p"]
