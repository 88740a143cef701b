"""What a generation-scored evaluation (`evaluate.reward`) costs: seconds per 100 prompts.

    python bench/generation_eval_cost.py                      # the tests' tiny shapes
    python bench/generation_eval_cost.py --shape 0.5b         # Qwen2-0.5B's body, RoBERTa-large's reward
    python bench/generation_eval_cost.py --prompts 8 --max-new-tokens 8   # a check that it runs

Runs `GenerationEval.evaluate` itself, twice, on models built from their configs (random weights,
the character tokenizer; nothing is downloaded), on the CPU unless `--device` names another:
- the first evaluation samples the policy and the reference, takes both log-probs of the policy's
  samples, and scores both sets of samples (the cache starts empty);
- a later one samples and scores the policy alone (the reference's samples and scores are kept).
Random weights rarely emit EOS, so every sample runs to `--max-new-tokens`: the figures are the
cost of full-length answers. Time nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    Qwen2Config,
    RobertaConfig,
)

from dpo_exp.experiment.reward_eval import GenerationEval
from dpo_exp.models.loading import build_char_tokenizer
from dpo_exp.models.reward import load_reward
from dpo_exp.models.score_cache import CachedReward


def policy_config(shape: str, tokenizer) -> LlamaConfig | Qwen2Config:
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if shape == "0.5b":  # Qwen2-0.5B's layers and widths
        return Qwen2Config(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            **special,
        )
    return LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **special
    )


def classifier_folder(shape: str, tokenizer, folder: Path) -> Path:
    """A sentiment classifier's shape (RoBERTa-large at 0.5b, as siebert/sentiment-roberta-large-english)."""
    large = {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
    }
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        **(large if shape == "0.5b" else tiny),
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("tiny", "0.5b"), default="tiny")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    policy = AutoModelForCausalLM.from_config(policy_config(args.shape, tokenizer)).to(args.device)
    module = SimpleNamespace(policy=policy, reference=copy.deepcopy(policy).eval())
    with tempfile.TemporaryDirectory() as folder:
        reward = load_reward(
            str(classifier_folder(args.shape, tokenizer, Path(folder) / "classifier")),
            output="prob:POSITIVE",
            batch_size=args.batch_size,
        )
        evaluation = GenerationEval(
            CachedReward(reward, Path(folder) / "cache"),
            tokenizer,
            None,
            prompts=args.prompts,
            temperature=1.0,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=0,
        )
        evaluation.use_prompts(
            [
                (tokenizer.encode(f"Review {i}: the film was", add_special_tokens=True), None)
                for i in range(args.prompts)
            ]
        )
        per_100 = 100 / args.prompts
        for name in ("first evaluation (policy and reference)", "later evaluation (policy only)"):
            start = time.perf_counter()
            figures, _ = evaluation.evaluate(module)
            seconds = time.perf_counter() - start
            where = (
                f"{args.shape} on {args.device}, {args.max_new_tokens} new tokens, batch {args.batch_size}"
            )
            length = f"mean length {figures['length']:.0f} tokens"
            print(f"{where}: {name}: {seconds * per_100:.2f} s per 100 prompts ({length})")


if __name__ == "__main__":
    main()
