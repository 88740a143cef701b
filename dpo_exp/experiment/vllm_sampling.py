"""The sample stage's draws with vLLM (`sample.backend=vllm`), for policies of real size.

vLLM loads the saved model folder and draws `num_samples` completions a prompt from the same prompt
token ids `generate` gets; its outputs become the same token-id lists cut at EOS, and the same cut
flags, so labelling, pairing and the stage's files do not depend on the backend. vLLM is an
optional extra (`pip install 'dpo_exp[vllm]'`) that runs on a CUDA GPU; it is imported only here,
when a stage draws with it, and checked at the entry (`check_backend`).
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dpo_exp.errors import ConfigError
from dpo_exp.experiment.generation import cut_at_eos, encode_prompts, ended
from dpo_exp.experiment.sample import Labelled, label_samples
from dpo_exp.models.lora import uses_lora
from dpo_exp.models.reward import Reward
from dpo_exp.tasks import Problem

INSTALL = "pip install 'dpo_exp[vllm]'"
# The keys only vLLM reads; with sample.backend=hf they stay out of the stage's key (its keys are
# what they were before vLLM was a choice).
VLLM_KEYS = ("backend", "vllm_dtype", "vllm_gpu_memory_utilization")


def uses_vllm(sample_cfg: Any) -> bool:
    return sample_cfg is not None and str(sample_cfg.get("backend", "hf")) == "vllm"


def check_backend(sample_cfg: DictConfig, model_cfg: DictConfig) -> None:
    """`sample.backend=vllm` where it can run: vLLM installed, a CUDA GPU, a full model folder."""
    if not uses_vllm(sample_cfg):
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"sample.backend=vllm: vLLM is not installed ({INSTALL}, on a machine with a CUDA GPU); "
            "or sample.backend=hf"
        ) from None
    if not torch.cuda.is_available():
        raise ConfigError(
            "sample.backend=vllm: vLLM samples on a CUDA GPU and none is visible; use sample.backend=hf"
        )
    if uses_lora(model_cfg):
        raise ConfigError(
            "sample.backend=vllm: with LoRA the SFT model is saved as an adapter, and vLLM loads a "
            "full model folder; use sample.backend=hf"
        )
    share = float(sample_cfg.vllm_gpu_memory_utilization)
    if not 0 < share <= 1:
        raise ConfigError(
            f"sample.vllm_gpu_memory_utilization must be in (0, 1] (the GPU's share vLLM takes), got {share}"
        )


def saved_dtype(model_dir: Path) -> str:
    """The dtype the folder's weights were saved in, as vLLM names it (its `auto` would sample an
    fp32 model in fp16, unlike `generate`)."""
    config = json.loads((model_dir / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "auto")


def completions_of(outputs: list[Any], eos_id: int | None) -> tuple[list[list[list[int]]], list[list[bool]]]:
    """(token ids, cut flags) per prompt from vLLM's `RequestOutput`s, in prompt order.

    The ids are cut at EOS and keep it, as `generate_completions` gives them. A completion is cut
    when it stopped at max_tokens (`finish_reason` "length") without EOS; "stop" is EOS (the only
    stop token: the engine reads no generation config). Anything else (an aborted request) is an
    error, not a sample."""
    samples, cut = [], []
    for output in outputs:
        rows, flags = [], []
        for completion in sorted(output.outputs, key=lambda item: item.index):
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM finished a sample with {completion.finish_reason!r}")
            ids = cut_at_eos(list(completion.token_ids), eos_id)
            rows.append(ids)
            flags.append(completion.finish_reason == "length" and not ended(ids, eos_id))
        samples.append(rows)
        cut.append(flags)
    return samples, cut


class VllmDraws:
    """Draws from one vLLM engine, split after split. Every draw has its own seed (the first seed,
    then one more per draw), so the random numbers of a draw do not depend on how vLLM batches them."""

    def __init__(self, llm: Any, tokenizer: Any, reward: Reward, options: dict[str, Any], seed: int) -> None:
        self.llm, self.tokenizer, self.reward, self.options = llm, tokenizer, reward, options
        self.next_seed = seed

    def requests(self, prompt_ids: list[list[int]]) -> tuple[list[Any], list[Any]]:
        """(prompts, sampling params) for `LLM.generate`: a `TokensPrompt` and a `SamplingParams`
        a prompt, `n` samples each, at the sample stage's temperature, top-p and length."""
        import vllm
        from vllm.inputs import TokensPrompt

        count = int(self.options["num_samples"])
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        params = [
            vllm.SamplingParams(
                n=count,
                temperature=float(self.options["temperature"]),
                top_p=float(self.options["top_p"]),
                max_tokens=int(self.options["max_new_tokens"]),
                seed=self.next_seed + index * count,  # vLLM seeds sample j of a prompt with seed + j
            )
            for index in range(len(prompt_ids))
        ]
        self.next_seed += len(prompt_ids) * count
        return prompts, params

    def __call__(self, problems: list[Problem], bar: Any = None) -> list[Labelled]:
        prompt_ids = encode_prompts(self.tokenizer, [problem.prompt for problem in problems])
        prompts, params = self.requests(prompt_ids)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples, cut = completions_of(outputs, self.tokenizer.eos_token_id)
        if bar is not None:
            bar.update(len(problems))
        return label_samples(self.tokenizer, problems, self.reward, samples, cut)


@contextlib.contextmanager
def vllm_draws(
    model_dir: Path, tokenizer: Any, reward: Reward, sample: DictConfig, options: dict[str, Any], seed: int
) -> Iterator[Callable[[list[Problem], Any], list[Labelled]]]:
    """A vLLM engine on `model_dir` for the stage's draws, released when the stage ends (the
    preference run that follows needs the GPU's memory)."""
    import vllm

    gc.collect()
    torch.cuda.empty_cache()  # what earlier stages left cached, before vLLM takes its share
    llm = vllm.LLM(
        model=str(model_dir),
        dtype=str(sample.vllm_dtype) if sample.vllm_dtype is not None else saved_dtype(model_dir),
        seed=seed,
        gpu_memory_utilization=float(sample.vllm_gpu_memory_utilization),
        # No generation config: only the sampling params given, and EOS the one stop token, as `generate`.
        generation_config="vllm",
    )
    draws = VllmDraws(llm, tokenizer, reward, options, seed)
    try:
        yield draws
    finally:
        draws.llm = llm = None
        gc.collect()
        torch.cuda.empty_cache()
