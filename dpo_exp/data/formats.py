"""TRL's preference formats, as rows hold them, and the split of an implicit prompt.

A pairs row is in one of these formats (TRL's names), told apart by the kinds of its values:

- standard: `prompt`, `chosen`, `rejected` strings;
- conversational: `prompt`, `chosen`, `rejected` message lists, rendered by the chat template;
- implicit prompt: `chosen` and `rejected` whole texts or conversations that share the prompt;
  the prompt is their shared prefix. A row with a text `prompt` beside conversations (as
  HuggingFaceH4/ultrafeedback_binarized has: `prompt` repeats the first user turn) is implicit
  too, TRL's rule: the conversations hold the prompt.

Unpaired rows (`prompt`, `completion`, `label`) are KTO's format, read by the `unpaired` source.
Demonstrations for SFT are TRL's prompt-completion rows (`prompt`, `completion`, text or message
lists) or conversational language-modelling rows (`messages`, whose final assistant turn is the
completion), read by the `demonstrations` source.
"""

from __future__ import annotations

import os
from collections import Counter

from dpo_exp.data.records import PreferencePair, Text

STANDARD = "standard"
CONVERSATIONAL = "conversational"
IMPLICIT_TEXT = "implicit prompt (text)"
IMPLICIT_TRANSCRIPT = "implicit prompt (HH-RLHF transcripts)"
IMPLICIT_CONVERSATIONAL = "implicit prompt (conversational)"
UNPAIRED = "unpaired"
UNPAIRED_CONVERSATIONAL = "unpaired (conversational)"
DEMONSTRATION = "prompt-completion"
DEMONSTRATION_CONVERSATIONAL = "prompt-completion (conversational)"
DEMONSTRATION_MESSAGES = "messages (final assistant turn)"

HH_ASSISTANT = "\n\nAssistant:"


def explicit_format(prompt: Text, chosen: Text) -> str:
    """The format of a row whose prompt is its own field: standard or conversational."""
    return CONVERSATIONAL if isinstance(chosen, list) and isinstance(prompt, list) else STANDARD


def is_implicit(prompt: Text | None, chosen: Text) -> bool:
    """No prompt field, or a text prompt beside conversations (TRL's `maybe_extract_prompt`)."""
    return prompt is None or (isinstance(prompt, str) and isinstance(chosen, list))


def split_implicit(chosen: Text, rejected: Text) -> tuple[PreferencePair, str] | None:
    """The pair whose prompt is the shared prefix of two whole texts or conversations, and its
    format; None when chosen and rejected are of different kinds.

    - Conversations: the longest shared prefix of messages, stopping one short of the shorter
      conversation, so that each response keeps at least its last message.
    - HH-RLHF transcripts (text with a "\\n\\nAssistant:" in the shared part): up to and including
      the last such marker inside the shared prefix. The raw shared prefix would cut into
      responses that start alike (" I ..."); each transcript's own last marker would go wrong
      where a response continues the dialogue by itself.
    - Other text: the longest shared prefix of characters, less a space it ends on (the
      response keeps its leading space), as TRL's `extract_prompt` splits it.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        shared, limit = 0, min(len(chosen), len(rejected)) - 1
        while shared < limit and chosen[shared] == rejected[shared]:
            shared += 1
        pair = PreferencePair(chosen[:shared], chosen[shared:], rejected[shared:])
        return pair, IMPLICIT_CONVERSATIONAL
    if not (isinstance(chosen, str) and isinstance(rejected, str)):
        return None
    shared = len(os.path.commonprefix([chosen, rejected]))
    marker = chosen.rfind(HH_ASSISTANT, 0, shared)  # the end bound keeps the whole marker shared
    if marker >= 0:
        cut, kind = marker + len(HH_ASSISTANT), IMPLICIT_TRANSCRIPT
    else:
        cut, kind = shared, IMPLICIT_TEXT
        if cut and cut < min(len(chosen), len(rejected)) and chosen[cut - 1] == " ":
            cut -= 1
    return PreferencePair(chosen[:cut], chosen[cut:], rejected[cut:]), kind


def describe_formats(counts: Counter[str]) -> str:
    """One format's name, or each with its row count where a file mixes them."""
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} ({count} rows)" for name, count in counts.most_common())
