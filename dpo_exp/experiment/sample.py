"""Sample and label: k completions per prompt, scored by a reward, turned into training sets.

From the labelled samples come preference pairs (best vs worst, or every higher x lower pair;
a prompt whose samples all score the same gives none; with `min_margin`, only pairs whose rewards
differ by at least that much), unpaired KTO examples and the RFT set (the distinct passing samples).
A reward that gives every sample of a split the same score stops the stage before any pairing: no
loss can learn from it, and it is most often a misconfigured reward (a wrong output of a
classifier) or a model no sample of which passes.

KTO's examples are the samples as drawn, duplicates included, each desirable when it passes: its
authors train on the samples so, and the counts then say how often the model gives each answer
(a verifier that accepts one string per prompt would otherwise leave one desirable example per
prompt against every distinct wrong one). Pairs and the RFT set keep each distinct completion
once (with `pair_mode=all`, duplicates would multiply the pairs of the commonest answers).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from dpo_exp.data.records import PreferencePair, UnpairedExample
from dpo_exp.errors import UserError
from dpo_exp.experiment.generation import decode, encode_prompts, ended, generate_completions
from dpo_exp.models.reward import Reward
from dpo_exp.tasks import Problem

PAIR_MODES = ("best_vs_worst", "all")


@dataclass(frozen=True)
class Labelled:
    """One prompt's samples, their rewards, and which were cut: stopped at max_new_tokens with no
    EOS (their training rows say so, and tokenisation gives them no EOS)."""

    prompt: str
    answer: str | None
    completions: list[str]
    rewards: list[float]
    cut: list[bool]


def sample_and_label(
    model: PreTrainedModel,
    tokenizer: Any,
    problems: list[Problem],
    reward: Reward,
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    bar: Any = None,
) -> list[Labelled]:
    """Draw `num_samples` completions per problem and score them with `reward`, all in one call (a
    classifier scores them in batches).

    `bar`: a progress bar counting prompts.
    """
    prompt_ids = encode_prompts(tokenizer, [problem.prompt for problem in problems])
    samples = generate_completions(
        model,
        tokenizer,
        prompt_ids,
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        bar=bar,
    )
    cut = [[not ended(sample, tokenizer.eos_token_id) for sample in ids] for ids in samples]
    return label_samples(tokenizer, problems, reward, samples, cut)


def label_samples(
    tokenizer: Any,
    problems: list[Problem],
    reward: Reward,
    samples: list[list[list[int]]],
    cut: list[list[bool]],
) -> list[Labelled]:
    """Decode each problem's samples (token ids) and score them with `reward`, all in one call;
    `cut[i][j]`: whether sample j of problem i stopped at max_new_tokens without EOS."""
    texts = [[decode(tokenizer, sample) for sample in ids] for ids in samples]
    rows = [(problem, text) for problem, row in zip(problems, texts, strict=True) for text in row]
    scores = iter(
        reward.score([p.prompt for p, _ in rows], [text for _, text in rows], [p.answer for p, _ in rows])
    )
    labelled = []
    for problem, row, flags in zip(problems, texts, cut, strict=True):
        rewards = [next(scores) for _ in row]
        labelled.append(Labelled(problem.prompt, problem.answer, row, rewards, list(flags)))
    return labelled


def check_scores_vary(labelled: list[Labelled], reward_name: str, split: str) -> None:
    """Refuse samples that all score the same: they give no pair, and nothing stands out for KTO
    or RFT."""
    scores = {score for item in labelled for score in item.rewards}
    count = sum(len(item.rewards) for item in labelled)
    if len(scores) == 1 and count > 1:
        raise UserError(
            f"reward {reward_name}: gave all {count} samples of the {split} split the same score "
            f"{scores.pop():g}, so no pair can be made: check task.reward and task.reward_output (a "
            "constant score), or the SFT model (one that no sample passes, or that every sample does)"
        )


def _distinct(item: Labelled) -> list[tuple[str, float, bool]]:
    """(completion, reward, cut) for each distinct sample, in first-seen order. The same text cut
    and ended are two samples: they train differently (without and with EOS)."""
    rewards: dict[tuple[str, bool], float] = {}
    for text, score, cut in zip(item.completions, item.rewards, item.cut, strict=True):
        rewards.setdefault((text, cut), score)
    return [(text, score, cut) for (text, cut), score in rewards.items()]


def build_pairs(
    labelled: list[Labelled], mode: str = "best_vs_worst", min_margin: float = 0.0
) -> list[PreferencePair]:
    """Preference pairs from samples; ties (equal rewards) never make a pair, nor two rewards that
    differ by less than `min_margin`."""
    if mode not in PAIR_MODES:
        raise ValueError(f"unknown pair mode {mode!r}; valid modes: {', '.join(PAIR_MODES)}")
    pairs = []
    for item in labelled:
        distinct = _distinct(item)
        if mode == "best_vs_worst":
            best = max(distinct, key=lambda sample: sample[1])
            worst = min(distinct, key=lambda sample: sample[1])
            candidates = [(best, worst)]
        else:
            candidates = [(high, low) for high in distinct for low in distinct]
        pairs += [
            PreferencePair(
                item.prompt,
                high[0],
                low[0],
                chosen_cut=high[2],
                rejected_cut=low[2],
                chosen_score=high[1],
                rejected_score=low[1],
            )
            for high, low in candidates
            if high[1] > low[1] and high[1] - low[1] >= min_margin
        ]
    return pairs


def build_unpaired(labelled: list[Labelled], threshold: float) -> list[UnpairedExample]:
    """Every sample as drawn, duplicates included, desirable when its reward reaches `threshold`
    (KTO's data)."""
    return [
        UnpairedExample(item.prompt, completion, desirable=score >= threshold, cut=cut)
        for item in labelled
        for completion, score, cut in zip(item.completions, item.rewards, item.cut, strict=True)
    ]


def build_rft(labelled: list[Labelled], threshold: float) -> list[UnpairedExample]:
    """Each distinct sample whose reward reaches `threshold` (all desirable)."""
    return [
        UnpairedExample(item.prompt, completion, desirable=True, cut=cut)
        for item in labelled
        for completion, score, cut in _distinct(item)
        if score >= threshold
    ]


def label_stats(labelled: list[Labelled], threshold: float) -> dict[str, float]:
    """How many prompts gave a usable pair, and why the others did not."""
    passing = [sum(score >= threshold for score in item.rewards) for item in labelled]
    samples = sum(len(item.rewards) for item in labelled)
    return {
        "prompts": len(labelled),
        "samples": samples,
        "mean_reward": sum(sum(item.rewards) for item in labelled) / max(samples, 1),
        "prompts_with_pair": sum(len(set(item.rewards)) > 1 for item in labelled),
        "prompts_all_pass": sum(
            count == len(item.rewards) for count, item in zip(passing, labelled, strict=True)
        ),
        "prompts_all_fail": sum(count == 0 for count in passing),
        "cut": sum(sum(item.cut) for item in labelled),  # samples that reached max_new_tokens, no EOS
    }


# -- the stage's files ----------------------------------------------------------------------

SAMPLES, STATS = "samples.jsonl", "stats.json"


def split_files(split: str) -> dict[str, str]:
    """File names of one split's training sets: `pairs`, `unpaired` and `rft`."""
    suffix = "" if split == "train" else f"_{split}"
    return {kind: f"{kind}{suffix}.jsonl" for kind in ("pairs", "unpaired", "rft")}


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row) + "\n")


def pair_row(pair: PreferencePair) -> dict[str, Any]:
    """A pairs.jsonl row, with each response's reward (what the reward-aware losses take);
    `chosen_cut` / `rejected_cut` only where true (what the `pairs` source reads)."""
    row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    row.update({key: True for key in ("chosen_cut", "rejected_cut") if getattr(pair, key)})
    if pair.chosen_score is not None:
        row.update(score_chosen=pair.chosen_score, score_rejected=pair.rejected_score)
    return row


def unpaired_row(example: UnpairedExample) -> dict[str, Any]:
    """An unpaired.jsonl or rft.jsonl row; `cut` only where true (what the `unpaired` source reads)."""
    row = {"prompt": example.prompt, "completion": example.completion, "label": example.desirable}
    return {**row, "cut": True} if example.cut else row


def write_split(
    folder: Path,
    split: str,
    labelled: list[Labelled],
    *,
    mode: str,
    threshold: float,
    min_margin: float = 0.0,
) -> dict:
    """Write one split's samples and training sets; return its counts."""
    files = split_files(split)
    pairs = build_pairs(labelled, mode, min_margin)
    unpaired = build_unpaired(labelled, threshold)
    rft = build_rft(labelled, threshold)
    write_jsonl([pair_row(pair) for pair in pairs], folder / files["pairs"])
    write_jsonl([unpaired_row(example) for example in unpaired], folder / files["unpaired"])
    write_jsonl([unpaired_row(example) for example in rft], folder / files["rft"])
    suffix = "" if split == "train" else f"_{split}"
    write_jsonl([asdict(item) for item in labelled], folder / f"samples{suffix}.jsonl")
    stats = label_stats(labelled, threshold)
    # A prompt gave a pair only where two of its rewards differ by at least `min_margin`.
    paired = {pair.prompt for pair in pairs}
    with_pair = sum(item.prompt in paired for item in labelled)
    stats.update(prompts_with_pair=with_pair, pairs=len(pairs), unpaired=len(unpaired), rft=len(rft))
    return stats


def format_stats(stats: dict[str, float], split: str) -> str:
    return (
        f"sampled ({split}): {stats['prompts']} prompts x k, mean reward {stats['mean_reward']:.3f}; "
        f"{stats['prompts_with_pair']} prompts gave a usable pair "
        f"({stats['prompts_all_pass']} all passed, {stats['prompts_all_fail']} all failed); "
        f"{stats['pairs']} pairs, {stats['unpaired']} unpaired, {stats['rft']} RFT examples; "
        f"{stats['cut']} of {stats['samples']} samples cut at max_new_tokens (no EOS)"
    )


def short_stats(stats: dict[str, dict[str, float]]) -> str:
    """`train: 794 of 1000 prompts gave 1774 pairs, mean reward 0.497; val: 113 of 128 gave 249 pairs`."""
    train, val = stats["train"], stats["val"]
    return (
        f"train: {train['prompts_with_pair']} of {train['prompts']} prompts gave {train['pairs']} pairs, "
        f"mean reward {train['mean_reward']:.3f}; "
        f"val: {val['prompts_with_pair']} of {val['prompts']} gave {val['pairs']} pairs"
    )
