"""The demonstrations reader: text and chat rows become desirable examples whose completion alone
is learnt (every prompt position labelled -100), and a row with nothing to learn is one error
naming the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_exp.data import formats
from dpo_exp.data.collate import IndexedItem, UnpairedCollator
from dpo_exp.data.demonstrations import demonstrations
from dpo_exp.data.records import DataError, UnpairedExample
from dpo_exp.data.tokenize import tokenize_records
from dpo_exp.losses.logprobs import IGNORE_INDEX
from dpo_exp.training.schedule import BUILT_LR, PRETRAINED_LR, SFT_PRETRAINED_LR, default_lr

CHAT = {
    "messages": [
        {"role": "system", "content": "Add."},
        {"role": "user", "content": "1+1"},
        {"role": "assistant", "content": "2"},
    ]
}
TEXT = {"prompt": "Q: 2+2=", "completion": " 4"}


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_text_and_chat_rows_become_desirable_examples_the_final_assistant_turn_the_completion(tmp_path):
    loaded = demonstrations(write_rows(tmp_path / "demos.jsonl", [TEXT, CHAT]))
    text, chat = loaded.records
    assert text == UnpairedExample("Q: 2+2=", " 4", desirable=True)
    assert chat == UnpairedExample(CHAT["messages"][:2], CHAT["messages"][2:], desirable=True)
    assert loaded.format == f"{formats.DEMONSTRATION} (1 rows), {formats.DEMONSTRATION_MESSAGES} (1 rows)"


def test_prompt_completion_messages_are_read_as_trl_writes_them(tmp_path):
    row = {"prompt": CHAT["messages"][:2], "completion": CHAT["messages"][2:]}
    (record,) = demonstrations(write_rows(tmp_path / "demos.jsonl", [row])).records
    assert record == UnpairedExample(row["prompt"], row["completion"], desirable=True)


def labels_of(record: UnpairedExample, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, completion ids, the collated labels) of one demonstration."""
    (tokenized,), dropped = tokenize_records([record], tokenizer, max_length=128, max_prompt_length=64)
    assert not dropped
    items = [IndexedItem(0, tokenized)]
    batch = UnpairedCollator.for_split(tokenizer.pad_token_id, items, mismatched_rows=False)(items)
    return tokenized.prompt_ids, tokenized.completion_ids, batch["labels"][0].tolist()


def test_a_text_demonstration_labels_its_completion_and_eos_only(char_tokenizer):
    prompt, completion, labels = labels_of(UnpairedExample("Q: 2+2=", " 4", desirable=True), char_tokenizer)
    # "Q: 2+2=" is 7 characters, 7 tokens, all masked; " 4" then EOS are learnt.
    assert len(prompt) == 7 and char_tokenizer.decode(completion) == " 4</s>"
    assert labels == [IGNORE_INDEX] * 7 + completion


def test_a_chat_demonstration_masks_every_turn_before_the_last_assistant_turn(char_tokenizer):
    record = UnpairedExample(CHAT["messages"][:2], CHAT["messages"][2:], desirable=True)
    prompt, completion, labels = labels_of(record, char_tokenizer)
    # The chat template renders "system: Add.</s>\nuser: 1+1</s>\nassistant:" as the prompt (with the
    # generation prompt); the completion is the rest of the conversation's rendering, then EOS.
    assert char_tokenizer.decode(prompt) == "system: Add.</s>\nuser: 1+1</s>\nassistant:"
    assert char_tokenizer.decode(completion) == " 2</s>\n</s>"
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == completion


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": "Q"}, "completion", "no completion"),
        ({"prompt": "Q", "completion": "  "}, "completion", "the completion is empty"),
        ({"prompt": "Q", "chosen": "a", "rejected": "b"}, "completion", "read by data=pairs"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant turn"),
        (
            {"messages": [*CHAT["messages"], {"role": "user", "content": "and?"}]},
            "messages",
            "ends with a user turn",
        ),
        (
            {"messages": [CHAT["messages"][1], {"role": "assistant", "content": ""}]},
            "messages",
            "the final assistant turn is empty",
        ),
        ({**TEXT, "label": False}, "label", "labelled undesirable"),
    ],
)
def test_a_row_with_nothing_to_learn_is_one_line_naming_file_line_and_field(tmp_path, row, field, message):
    path = write_rows(tmp_path / "demos.jsonl", [TEXT, row])
    with pytest.raises(DataError) as error:
        demonstrations(path)
    text = str(error.value)
    assert "\n" not in text and message in text
    assert text.startswith(f"{path}, line 2, field '{field}'")


def test_a_loaded_model_fine_tunes_on_demonstrations_at_sfts_rate():
    assert default_lr("Qwen/Qwen2.5-0.5B", "demonstrations") == SFT_PRETRAINED_LR == 2e-5  # TRL's SFTConfig
    assert default_lr("Qwen/Qwen2.5-0.5B", "pairs") == PRETRAINED_LR  # preference training: DPO's
    assert default_lr(None, "demonstrations") == BUILT_LR  # random weights, whatever the data
