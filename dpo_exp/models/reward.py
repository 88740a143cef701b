"""A reward: what scores a completion of a prompt, for evaluation and for labelling samples.

A reward is either a function named `module:function`, called as `(prompt, completion, answer)`
(the built-in tasks' verifiers), or a sequence-classification model by local path or hub id (a
reward model, or a sentiment classifier as in the DPO paper's IMDb experiment), scored in batches
on the run's device in the model's own dtype, through its own tokenizer. Both score a list at once
and refuse a non-finite value or a wrong count, naming the reward.

A classifier reads the prompt and completion through its tokenizer's chat template when it has one
(a user turn and an assistant turn, or the prompt's own messages where the data wrote a
conversation, then the completion as the assistant's turn, as reward models trained on
conversations expect;
`chat_template` true or false decides instead), otherwise as one text, prompt followed by
completion (as a sentiment classifier reads a continued review). Inputs longer than `max_length`
tokens (default: the most the model reads, its tokenizer's `model_max_length` or its position
table, capped at 4096) are cut from the right. `output` picks the score: `logit:<i>` the i-th logit
(a reward model's single output is `logit:0`), `prob:<i or label>` the softmax probability of a
class (`prob:POSITIVE`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from dpo_exp.errors import UserError
from dpo_exp.tasks import load_function

MAX_LENGTH_CAP = 4096  # tokenizers without a limit report model_max_length as 1e30


class Reward:
    """Scores completions: `score(prompts, completions, answers)` -> one float per completion."""

    name: str  # shown in errors and reports
    digest: str  # identifies its scores: the same digest, the same score for the same input

    def score(
        self,
        prompts: Sequence[str | list[dict[str, str]]],
        completions: Sequence[str],
        answers: Sequence[str | None] | None = None,
    ) -> list[float]:
        answers = list(answers) if answers is not None else [None] * len(prompts)
        if not len(prompts) == len(completions) == len(answers):
            raise ValueError(
                f"{len(prompts)} prompts, {len(completions)} completions, {len(answers)} answers"
            )
        scores = self._score(list(prompts), list(completions), answers) if prompts else []
        return checked(scores, len(prompts), self.name)

    def _score(self, prompts: list[str], completions: list[str], answers: list[str | None]) -> list[float]:
        raise NotImplementedError

    def to(self, device: str | torch.device) -> Reward:
        """Where a model reward scores (a function has no device)."""
        return self


def checked(scores: Any, count: int, name: str) -> list[float]:
    """The scores as floats, refused when their count is wrong or one is not finite."""
    try:
        values = [float(score) for score in scores]
    except (TypeError, ValueError) as error:
        raise UserError(f"reward {name}: returned a value that is not a number ({error})") from None
    if len(values) != count:
        raise UserError(f"reward {name}: returned {len(values)} scores for {count} completions")
    bad = next((index for index, value in enumerate(values) if not math.isfinite(value)), None)
    if bad is not None:
        raise UserError(f"reward {name}: score {values[bad]} for completion {bad}; scores must be finite")
    return values


class FunctionReward(Reward):
    """`module:function`, called once per completion as function(prompt, completion, answer)."""

    def __init__(self, path: str) -> None:
        try:
            self.function: Callable[..., Any] = load_function(path)
        except (ValueError, ImportError) as error:
            raise UserError(f"reward {path}: {error}") from None
        self.name = path
        self.digest = digest_of({"function": path})

    def _score(self, prompts: list[str], completions: list[str], answers: list[str | None]) -> list[float]:
        return [
            self.function(prompt, completion, answer)
            for prompt, completion, answer in zip(prompts, completions, answers, strict=True)
        ]


@dataclass(frozen=True)
class ClassifierOutput:
    """Which number of a classifier's output is the reward: a logit, or a class probability."""

    kind: str  # logit | prob
    index: int

    @classmethod
    def parse(cls, text: str, labels: dict[str, int], name: str) -> ClassifierOutput:
        kind, _, which = text.partition(":")
        if kind not in ("logit", "prob") or not which:
            raise UserError(
                f"reward {name}: output must be logit:<index> or prob:<index or label>, got {text!r}"
            )
        index = int(which) if which.lstrip("-").isdigit() else labels.get(which)
        if index is None or not -len(labels) <= index < len(labels):
            known = ", ".join(f"{label} ({i})" for label, i in labels.items())
            raise UserError(
                f"reward {name}: output {text!r} names no class of this model; its classes: {known}"
            )
        return cls(kind, index)


class ClassifierReward(Reward):
    """A sequence-classification model's logit or class probability, scored in batches."""

    def __init__(
        self,
        path: str,
        *,
        output: str = "logit:0",
        revision: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
        dtype: str = "auto",
        chat_template: bool | None = None,
    ) -> None:
        self.name = path
        self.model = load_classifier(path, revision=revision, dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        labels = {str(label): int(index) for label, index in (self.model.config.label2id or {}).items()}
        if len(labels) != self.model.config.num_labels:
            labels = {str(index): index for index in range(self.model.config.num_labels)}
        self.output = ClassifierOutput.parse(output, labels, path)
        limit = int(min(self.tokenizer.model_max_length, MAX_LENGTH_CAP, positions(self.model.config)))
        self.max_length = min(max_length or limit, limit)
        self.batch_size = batch_size
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if chat_template and not has_template:
            raise UserError(f"reward {path}: chat_template is true, but its tokenizer has no chat template")
        self.chat = has_template if chat_template is None else chat_template
        self.digest = digest_of(
            {
                "classifier": path,
                "revision": revision,
                "weights": weights_digest(self.model),
                "output": output,
            }
            | {"max_length": self.max_length, "chat": self.chat}
        )

    def to(self, device: str | torch.device) -> ClassifierReward:
        self.model.to(device)
        return self

    def text(self, prompt: str | list[dict[str, str]], completion: str) -> str:
        """What the classifier reads: the prompt (text, or a conversation's messages) and the
        completion as the assistant's turn, in its chat template; else as one text."""
        if isinstance(prompt, list) and not self.chat:
            return "\n".join(str(message.get("content", "")) for message in prompt) + "\n" + completion
        if not self.chat:
            return prompt + completion
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            [*turns, {"role": "assistant", "content": completion}], tokenize=False
        )

    @torch.no_grad()
    def _score(self, prompts: list[str], completions: list[str], answers: list[str | None]) -> list[float]:
        texts = [
            self.text(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)
        ]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                add_special_tokens=not self.chat,  # a chat template writes its own
            ).to(device)
            logits = self.model(**batch).logits.float()
            values = logits.softmax(dim=-1) if self.output.kind == "prob" else logits
            scores.extend(values[:, self.output.index].tolist())
        return scores


def positions(config: Any) -> int:
    """How many tokens the model can read: RoBERTa's family numbers positions after the padding id."""
    count = getattr(config, "max_position_embeddings", None) or MAX_LENGTH_CAP
    if "roberta" in str(getattr(config, "model_type", "")):
        count -= (config.pad_token_id or 0) + 1
    return count


def load_classifier(path: str, *, revision: str | None, dtype: str) -> Any:
    """The model at `path`, refused in one line when it is not a sequence classifier."""
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as error:
        raise UserError(f"reward {path}: cannot load its config ({error})") from None
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        found = ", ".join(architectures) or "no architecture named"
        raise UserError(
            f"reward {path}: not a sequence classifier ({found}); a reward model must load with "
            "AutoModelForSequenceClassification"
        )
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    return AutoModelForSequenceClassification.from_pretrained(path, revision=revision, dtype=torch_dtype)


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of the first and last parameter tensors: a retrained model at the same path differs."""
    parameters = list(model.parameters())
    hasher = hashlib.sha256()
    for tensor in (parameters[0], parameters[-1]):
        hasher.update(tensor.detach().float().cpu().numpy().tobytes())
    return hasher.hexdigest()[:16]


def digest_of(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_function(spec: str) -> bool:
    """`module:function`, not a path (a Windows drive's colon is followed by a separator)."""
    module, colon, name = spec.partition(":")
    return bool(colon) and name.isidentifier() and not Path(spec).exists() and "/" not in module


def load_reward(spec: str, **classifier_options: Any) -> Reward:
    """A function reward for `module:function`, else a classifier at that path or hub id."""
    if is_function(spec):
        return FunctionReward(spec)
    return ClassifierReward(spec, **classifier_options)
