"""Rewards: a `module:function` or a sequence classifier, scored in batches, refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dpo_exp.errors import UserError
from dpo_exp.models.reward import ClassifierReward, FunctionReward, load_reward


def constant_nan(prompt: str, completion: str, answer: str | None) -> float:
    return math.nan


def not_a_number(prompt: str, completion: str, answer: str | None) -> str:
    return "high"


def test_a_function_reward_is_called_per_completion_with_the_answer():
    reward = load_reward("dpo_exp.tasks.arithmetic:reward")
    assert isinstance(reward, FunctionReward)
    # 12 + 34 = 46 -> zero-padded "046" -> reversed "640"
    assert reward.score(["12+34=", "12+34="], ["640", "046"], ["640", "640"]) == [1.0, 0.0]
    assert reward.score([], []) == []


@pytest.mark.parametrize(
    ("function", "words"),
    [("constant_nan", "must be finite"), ("not_a_number", "not a number")],
)
def test_a_function_that_returns_a_bad_value_is_refused_naming_it(function, words):
    reward = load_reward(f"tests.unit.test_reward:{function}")
    with pytest.raises(UserError, match=f"reward tests.unit.test_reward:{function}: .*{words}"):
        reward.score(["p"], ["c"])


def test_a_missing_function_is_refused_naming_it():
    with pytest.raises(UserError, match="reward dpo_exp.tasks.arithmetic:nothing: .*no function nothing"):
        load_reward("dpo_exp.tasks.arithmetic:nothing")


def direct_logits(folder, texts: list[str]) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.cat([model(**tokenizer([text], return_tensors="pt")).logits for text in texts])


def test_a_classifier_scores_prompt_and_completion_as_one_text(tiny_classifier_dir):
    prompts, completions = ["This film", "I hated"], [" was great", " every minute of it"]
    logits = direct_logits(tiny_classifier_dir, [p + c for p, c in zip(prompts, completions, strict=True)])
    by_logit = load_reward(str(tiny_classifier_dir), output="logit:1", batch_size=1)
    by_label = load_reward(str(tiny_classifier_dir), output="prob:POSITIVE")  # both in one padded batch
    assert isinstance(by_logit, ClassifierReward) and not by_logit.chat
    assert by_logit.score(prompts, completions) == pytest.approx(logits[:, 1].tolist(), abs=1e-5)
    assert by_label.score(prompts, completions) == pytest.approx(logits.softmax(-1)[:, 1].tolist(), abs=1e-5)
    by_index = load_reward(str(tiny_classifier_dir), output="prob:0")
    negative, positive = by_index.score(prompts, completions), by_label.score(prompts, completions)
    assert [a + b for a, b in zip(negative, positive, strict=True)] == pytest.approx([1.0, 1.0])
    assert len({by_label.digest, by_index.digest, by_logit.digest}) == 3  # the output is in the digest


def test_a_classifier_cuts_long_inputs_to_what_it_can_read(tiny_classifier_dir):
    reward = load_reward(str(tiny_classifier_dir), output="logit:1")
    assert reward.max_length == 129  # 130 positions, which RoBERTa numbers from the padding id (0 here) + 1
    long = "x" * 1000
    cut = AutoTokenizer.from_pretrained(tiny_classifier_dir)(long, truncation=True, max_length=129)
    text = AutoTokenizer.from_pretrained(tiny_classifier_dir).decode(
        cut["input_ids"], skip_special_tokens=True
    )
    assert reward.score([""], [long]) == pytest.approx(reward.score([""], [text]), abs=1e-5)


def test_an_output_that_names_no_class_is_refused_listing_the_classes(tiny_classifier_dir):
    with pytest.raises(UserError, match=r"names no class .*NEGATIVE \(0\), POSITIVE \(1\)"):
        load_reward(str(tiny_classifier_dir), output="prob:JOY")
    with pytest.raises(UserError, match="output must be logit:<index> or prob:"):
        load_reward(str(tiny_classifier_dir), output="positive")


def test_a_causal_language_model_is_refused_as_a_reward(tiny_model_dir):
    with pytest.raises(
        UserError, match=f"reward {tiny_model_dir}: not a sequence classifier \\(LlamaForCausalLM\\)"
    ):
        load_reward(str(tiny_model_dir))


def test_a_classifier_reads_a_conversation_in_its_own_chat_template(tiny_classifier_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    chat = load_reward(str(tmp_path), output="logit:0")
    conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert (
        chat.chat
        and chat.text(conversation, "Hello!") == "[system] Be kind.\n[user] Hi\n[assistant] Hello!\n"
    )
    assert chat.text("Hi", "Hello!") == "[user] Hi\n[assistant] Hello!\n"
    plain = load_reward(str(tiny_classifier_dir), output="logit:0")
    assert plain.text(conversation, "Hello!") == "Be kind.\nHi\nHello!"
    assert plain.text("This film", " was great") == "This film was great"
