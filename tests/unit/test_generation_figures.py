"""Win rate with ties and its interval, the KL estimator, and the reward score cache, on hand values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dpo_exp.experiment.generation_figures import kl_estimate, win_rate
from dpo_exp.experiment.reward_eval import logged_at_step_zero
from dpo_exp.models.reward import Reward, digest_of
from dpo_exp.models.score_cache import CachedReward
from dpo_exp.training.result import generation_rows


def test_win_rate_counts_a_tie_as_half_with_its_paired_interval():
    # outcomes per prompt: win, tie, loss, win -> 1, 0.5, 0, 1; mean 0.625
    # sd (n - 1) = sqrt((0.375² + 0.125² + 0.625² + 0.375²) / 3) = sqrt(0.6875 / 3) = 0.478714
    # half-width 1.96 * 0.478714 / 2 = 0.469140
    figures = win_rate([0.9, 0.4, 0.1, 2.0], [0.5, 0.4, 0.3, 1.0])
    assert figures["win_rate"] == pytest.approx(0.625)
    assert figures["win_rate_ci95_low"] == pytest.approx(0.625 - 0.469140, abs=1e-6)
    assert figures["win_rate_ci95_high"] == pytest.approx(1.0)  # 1.094140, cut to 1


def test_all_ties_are_one_half_with_no_width_and_the_interval_stays_in_zero_one():
    assert win_rate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == {
        "win_rate": 0.5,
        "win_rate_ci95_low": 0.5,
        "win_rate_ci95_high": 0.5,
    }
    # win, loss: mean 0.5, sd sqrt(0.5) = 0.707107, half-width 1.96 * 0.707107 / sqrt(2) = 0.98
    assert win_rate([1.0, 0.0], [0.0, 1.0]) == {
        "win_rate": 0.5,
        "win_rate_ci95_low": 0.0,  # -0.48, cut to 0
        "win_rate_ci95_high": 1.0,  # 1.48, cut to 1
    }
    # win, win, tie: mean 5/6, sd sqrt((1/36 + 1/36 + 1/9) / 2) = 0.288675, half-width 0.326667
    figures = win_rate([2.0, 2.0, 1.0], [1.0, 1.0, 1.0])
    assert figures["win_rate_ci95_low"] == pytest.approx(5 / 6 - 0.326667, abs=1e-6)
    assert figures["win_rate_ci95_high"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 policy and 1 reference"):
        win_rate([1.0, 2.0], [1.0])


def test_kl_is_the_mean_sequence_log_ratio_of_the_policy_samples():
    # log-ratios per sequence: -3 - (-4) = 1, -10 - (-9.5) = -0.5, -2 - (-4.5) = 2.5 -> mean 1.0
    policy = torch.tensor([-3.0, -10.0, -2.0])
    reference = torch.tensor([-4.0, -9.5, -4.5])
    assert kl_estimate(policy, reference) == pytest.approx(1.0)
    assert kl_estimate(policy, policy) == 0.0
    with pytest.raises(ValueError, match="shaped"):
        kl_estimate(policy, reference[:2])


class CountingReward(Reward):
    """The completion's length, counting how many completions it scored."""

    def __init__(self, version: int = 1) -> None:
        self.name = f"counting-v{version}"
        self.digest = digest_of({"counting": version})
        self.scored = 0

    def _score(self, prompts, completions, answers):
        self.scored += len(completions)
        return [float(len(completion)) for completion in completions]


def test_the_cache_scores_each_text_once_and_again_for_another_reward(tmp_path):
    reward = CountingReward()
    cached = CachedReward(reward, tmp_path)
    assert cached.score(["p", "p", "q"], ["ab", "ab", "c"]) == [2.0, 2.0, 1.0]
    assert reward.scored == 2  # the repeated text once
    assert cached.score(["p", "q", "q"], ["ab", "c", "dddd"]) == [2.0, 1.0, 4.0]
    assert reward.scored == 3 and (cached.hits, cached.misses) == (3, 3)
    rerun = CachedReward(reward, tmp_path)  # a later run reads the disk
    assert rerun.score(["q", "p"], ["dddd", "ab"]) == [4.0, 2.0] and reward.scored == 3
    other = CountingReward(version=2)  # another digest: nothing is reused
    assert CachedReward(other, tmp_path).score(["p"], ["ab"]) == [2.0] and other.scored == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: text.replace("2.0", "3.0"),  # a score altered: the checksum no longer matches
        lambda text: "not json",
    ],
)
def test_a_damaged_cache_file_is_scored_again_never_read(tmp_path, damage):
    reward = CountingReward()
    CachedReward(reward, tmp_path).score(["p"], ["ab"])
    (path,) = (tmp_path / reward.digest).glob("*.json")
    path.write_text(damage(path.read_text()))
    assert CachedReward(reward, tmp_path).score(["p"], ["ab"]) == [2.0]
    assert reward.scored == 2


def test_a_cache_file_with_a_non_finite_score_is_not_read(tmp_path):
    reward = CountingReward()
    CachedReward(reward, tmp_path).score(["p"], ["ab"])
    (path,) = (tmp_path / reward.digest).glob("*.json")
    content = json.loads(path.read_text())
    assert math.isfinite(next(iter(content["scores"].values())))
    path.write_text(path.read_text().replace("2.0", "NaN"))
    assert CachedReward(reward, tmp_path).score(["p"], ["ab"]) == [2.0]


def test_the_result_block_shows_step_zero_to_end_with_the_interval():
    generation = {
        "reward": "my/classifier",
        "step0": {"reward": 0.5, "win_rate": 0.5, "kl": 0.0},
        "final": {
            "reward": 0.75,
            "win_rate": 0.625,
            "win_rate_ci95_low": 0.5,
            "win_rate_ci95_high": 0.75,
            "kl": 3.5,
        },
    }
    rows = dict(generation_rows(generation))
    assert rows["reward of samples, step 0 -> end (my/classifier)"] == ["0.5 -> 0.75"]
    assert rows["win rate against the reference's samples [95% interval]"] == ["0.5 -> 0.625 [0.5, 0.75]"]
    assert rows["KL(policy || reference) on its samples, nats per answer"] == ["0 -> 3.5"]
    assert generation_rows(None) == [] and generation_rows({"reward": "r"}) == []


def test_a_resumed_run_takes_its_step_zero_figures_from_its_metrics(tmp_path):
    assert logged_at_step_zero(tmp_path) is None  # no metrics yet
    (tmp_path / "metrics.csv").write_text(
        "step,train/loss,val/loss,eval/reward,eval/win_rate,eval/kl\n"
        "0,,0.69,0.25,0.5,0.0\n"
        "1,0.7,,,,\n"
        "2,,0.6,0.4,0.75,1.5\n"
    )
    assert logged_at_step_zero(tmp_path) == {"step": 0, "reward": 0.25, "win_rate": 0.5, "kl": 0.0}
    (tmp_path / "metrics.csv").write_text("step,val/loss\n0,0.69\n")
    assert logged_at_step_zero(tmp_path) is None  # a run that scored no generation


def test_the_reward_reads_each_prompt_as_the_data_wrote_it():
    from dpo_exp.data.collate import IndexedItem
    from dpo_exp.data.tokenize import TokenizedPair
    from dpo_exp.experiment.reward_eval import distinct_prompts

    messages = [{"role": "user", "content": "Hi"}]
    pairs = [
        TokenizedPair([1, 2], [3], [4], prompt=messages),
        TokenizedPair([1, 2], [5], [6], prompt=messages),  # the same prompt again
        TokenizedPair([7], [3], [4], prompt="plain"),
        TokenizedPair([8], [3], [4], prompt="third"),
    ]
    items = [IndexedItem(index, pair) for index, pair in enumerate(pairs)]
    assert distinct_prompts(items, 2) == [([1, 2], messages), ([7], "plain")]
