"""Demonstrations for supervised fine-tuning: a prompt and the completion to learn, nothing more.

A row is TRL's prompt-completion format, `{"prompt", "completion"}` (text, or message lists in
both), or its conversational format, `{"messages": [...]}`, whose final assistant turn is the
completion and every message before it the prompt. Message lists are rendered later by the
tokenizer's chat template exactly as conversational pairs are (`tokenize.render`: the prompt with
the generation prompt, the completion as the rest of the whole conversation's rendering).

Each row becomes a desirable `UnpairedExample`, the record of the unpaired data path, so a
demonstrations run is a training run like any other (`loss=rft`: the per-token NLL of the
completion, the prompt masked). A row with nothing to learn is an error naming the file, the row
and the field, not a dropped row: a demonstration file is written to be learnt whole.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import dpo_exp.data.formats as formats
from dpo_exp.data.records import Record, Text, UnpairedExample
from dpo_exp.data.sources import LoadedRecords, RowWhere, register_source, text_field
from dpo_exp.rows import Location, read_rows

DEMONSTRATIONS = "demonstrations"  # the source's name in YAML (conf/data/demonstrations.yaml)


@register_source(DEMONSTRATIONS)
def demonstrations(
    location: Location,
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    messages_field: str = "messages",
    max_rows: int | None = None,
) -> LoadedRecords:
    """Demonstrations, each a desirable `UnpairedExample`; the format recognised row by row."""
    where_read, rows = read_rows(location, max_rows)
    records: list[Record] = []
    kinds: Counter[str] = Counter()
    for row_index, row in enumerate(rows):
        where = RowWhere(where_read, location, row_index)
        # A file read by `datasets` has every column in every row: an absent field reads as null.
        if row.get(messages_field) is not None and row.get(completion_field) is None:
            prompt, completion = split_conversation(
                text_field(row, messages_field, where), where, messages_field
            )
            kind = formats.DEMONSTRATION_MESSAGES
        else:
            prompt, completion = prompt_and_completion(row, where, prompt_field, completion_field)
            kind = formats.DEMONSTRATION_CONVERSATIONAL if isinstance(prompt, list) else formats.DEMONSTRATION
        if row.get("label") is False:
            raise where.error(
                "labelled undesirable: SFT would learn it; KTO's rows are data=unpaired loss=kto", "label"
            )
        records.append(UnpairedExample(prompt, completion, desirable=True))
        kinds[kind] += 1
    return LoadedRecords(records, formats.describe_formats(kinds), where_read)


def prompt_and_completion(
    row: dict[str, Any], where: RowWhere, prompt_field: str, completion_field: str
) -> tuple[Text, Text]:
    """A prompt-completion row's two fields, both text or both message lists, the completion not blank."""
    if row.get(completion_field) is None:
        if "chosen" in row and "rejected" in row:
            why = "this row is a preference pair (chosen, rejected), read by data=pairs"
        else:
            why = "no completion: a demonstration is {prompt, completion} or {messages: [...]}"
        raise where.error(why, completion_field)
    completion = text_field(row, completion_field, where)
    prompt = text_field(row, prompt_field, where)
    if isinstance(prompt, list) != isinstance(completion, list):
        raise where.error(
            "prompt and completion must both be text or both be message lists", completion_field
        )
    if is_blank(completion):
        raise where.error("the completion is empty: there is nothing to learn", completion_field)
    return prompt, completion


def split_conversation(messages: Text, where: RowWhere, field: str) -> tuple[Text, Text]:
    """(the messages before the final assistant turn, [that turn]): the conversation must end with it."""
    if isinstance(messages, str):
        raise where.error("expected a list of messages, got text (text rows are {prompt, completion})", field)
    roles = [message["role"] for message in messages]
    if "assistant" not in roles:
        raise where.error("no assistant turn: the final assistant turn is what SFT learns", field)
    if roles[-1] != "assistant":
        raise where.error(
            f"the conversation ends with a {roles[-1]} turn: the final assistant turn is the completion, "
            "so it must be the last message",
            field,
        )
    if is_blank(messages[-1:]):
        raise where.error("the final assistant turn is empty: there is nothing to learn", field)
    return messages[:-1], messages[-1:]


def is_blank(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not any(message["content"].strip() for message in text)
