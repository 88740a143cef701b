"""Rendering, tokenisation, truncation and drops, on the offline character tokenizer.

Ids of the character tokenizer (`build_char_tokenizer()`): 0 <pad>, 1 <s>, 2 </s>, 3 <unk>,
then string.printable in order: "0"-"9" = 4-13, "a"-"z" = 14-39, "A"-"Z" = 40-65,
punctuation from 66 (":" = 81), " " = 98, "\\n" = 100.
"""

from __future__ import annotations

from collections import Counter

import pytest
from tokenizers import normalizers, processors

from dpo_exp.data.records import DataError, PreferencePair, UnpairedExample
from dpo_exp.data.tokenize import (
    TokenizedPair,
    TokenizedUnpaired,
    render,
    tokenize_record,
    tokenize_records,
)
from dpo_exp.models.tokenizer import build_char_tokenizer

BOS, EOS = 1, 2
BIG = {"max_length": 1000, "max_prompt_length": 500}

USER_HI = {"role": "user", "content": "hi"}
BOT_YO = {"role": "assistant", "content": "yo"}
BOT_NO = {"role": "assistant", "content": "no"}


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture
def bos_tok():
    """The character tokenizer, made to add BOS in front of text encoded with special tokens."""
    tokenizer = build_char_tokenizer()
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS)]
    )
    return tokenizer


# --- the basic layout -------------------------------------------------------------------


def test_pair_ids_are_prompt_then_responses_with_eos(tok):
    assert tokenize_record(PreferencePair("hi", "yo", "no"), tok, **BIG) == TokenizedPair(
        prompt_ids=[21, 22],  # h i
        chosen_ids=[38, 28, EOS],  # y o </s>
        rejected_ids=[27, 28, EOS],  # n o </s>
    )


def test_eos_is_appended_only_once(tok):
    # "</s>" in the text is the EOS token already: no second one.
    pair = PreferencePair("hi", "yo</s>", "no")
    assert tokenize_record(pair, tok, **BIG) == TokenizedPair(
        prompt_ids=[21, 22],  # h i
        chosen_ids=[38, 28, EOS],  # y o </s>    (not y o </s> </s>)
        rejected_ids=[27, 28, EOS],  # n o </s>
    )


def test_bos_is_added_once_to_the_prompt_only(bos_tok):
    pair = PreferencePair("hi", "yo", "no")
    assert tokenize_record(pair, bos_tok, **BIG) == TokenizedPair(
        prompt_ids=[BOS, 21, 22],  # <s> h i
        chosen_ids=[38, 28, EOS],  # y o </s>   (responses get no BOS)
        rejected_ids=[27, 28, EOS],  # n o </s>
    )
    # A prompt (a rendered chat template) that already holds BOS does not get a second one.
    with_bos = PreferencePair("<s>hi", "yo", "no")
    assert tokenize_record(with_bos, bos_tok, **BIG).prompt_ids == [BOS, 21, 22]


def test_unpaired_example(tok):
    example = UnpairedExample("hi", "yo", desirable=False)
    assert tokenize_record(example, tok, **BIG) == TokenizedUnpaired(
        prompt_ids=[21, 22],  # h i
        completion_ids=[38, 28, EOS],  # y o </s>
        desirable=False,
    )


def test_a_response_marked_cut_gets_no_eos(tok):
    # Sampled up to max_new_tokens without ending: training must not teach an end it never produced.
    pair = PreferencePair("hi", "yo", "no", chosen_cut=False, rejected_cut=True)
    assert tokenize_record(pair, tok, **BIG) == TokenizedPair(
        prompt_ids=[21, 22],  # h i
        chosen_ids=[38, 28, EOS],  # y o </s>   (ended)
        rejected_ids=[27, 28],  # n o         (cut: no EOS)
    )
    both_cut = PreferencePair("hi", "yo", "no", chosen_cut=True, rejected_cut=True)
    assert tokenize_record(both_cut, tok, **BIG).chosen_ids == [38, 28]  # y o
    assert tokenize_record(UnpairedExample("hi", "yo", False, cut=True), tok, **BIG) == TokenizedUnpaired(
        prompt_ids=[21, 22],  # h i
        completion_ids=[38, 28],  # y o   (cut: no EOS)
        desirable=False,
    )
    assert tokenize_record(UnpairedExample("hi", "yo", True), tok, **BIG).completion_ids == [38, 28, EOS]


# --- truncation -------------------------------------------------------------------------


def test_long_prompt_keeps_its_end(tok):
    pair = PreferencePair("abcdef", "yo", "no")
    result = tokenize_record(pair, tok, max_length=10, max_prompt_length=3)
    assert result == TokenizedPair(
        prompt_ids=[17, 18, 19],  # d e f     (a b c cut: the latest text stays)
        chosen_ids=[38, 28, EOS],  # y o </s>
        rejected_ids=[27, 28, EOS],  # n o </s>
    )


def test_long_prompt_keeps_a_leading_bos(bos_tok):
    pair = PreferencePair("abcdef", "yo", "no")
    result = tokenize_record(pair, bos_tok, max_length=10, max_prompt_length=3)
    assert result.prompt_ids == [BOS, 18, 19]  # <s> e f


def test_long_responses_keep_their_start(tok):
    # prompt 2 + longest response 6 > max_length 5: both responses are cut to 5 - 2 = 3.
    pair = PreferencePair("ab", "cdefg", "h")
    assert tokenize_record(pair, tok, max_length=5, max_prompt_length=4) == TokenizedPair(
        prompt_ids=[14, 15],  # a b
        chosen_ids=[16, 17, 18],  # c d e     (f g </s> cut)
        rejected_ids=[21, EOS],  # h </s>    (short enough: untouched)
        truncated=("chosen",),  # counted in the data report
    )


def test_a_response_that_just_fits_is_not_counted_as_truncated(tok):
    # prompt 2 + "cd" + EOS = 5 = max_length: nothing is cut.
    result = tokenize_record(UnpairedExample("ab", "cd", True), tok, max_length=5, max_prompt_length=4)
    assert result.completion_ids == [16, 17, EOS] and result.truncated == ()
    result = tokenize_record(UnpairedExample("ab", "cde", True), tok, max_length=5, max_prompt_length=4)
    assert result.completion_ids == [16, 17, 18] and result.truncated == ("completion",)


def test_nothing_is_cut_when_everything_fits(tok):
    pair = PreferencePair("ab", "cdefg", "h")
    result = tokenize_record(pair, tok, max_length=8, max_prompt_length=2)
    assert result == TokenizedPair([14, 15], [16, 17, 18, 19, 20, EOS], [21, EOS])


def test_prompt_is_cut_before_the_response_budget_is_set(tok):
    # prompt cut to 4 (c d e f), then responses get 6 - 4 = 2.
    pair = PreferencePair("abcdef", "xyz", "uv")
    assert tokenize_record(pair, tok, max_length=6, max_prompt_length=4) == TokenizedPair(
        prompt_ids=[16, 17, 18, 19],  # c d e f
        chosen_ids=[37, 38],  # x y
        rejected_ids=[34, 35],  # u v
        truncated=("chosen", "rejected"),  # x y z </s> and u v </s> both cut
    )


def test_unpaired_completion_is_cut_too(tok):
    example = UnpairedExample("ab", "cdefg", desirable=True)
    result = tokenize_record(example, tok, max_length=4, max_prompt_length=2)
    assert result == TokenizedUnpaired([14, 15], [16, 17], desirable=True, truncated=("completion",))


@pytest.mark.parametrize(("max_length", "max_prompt_length"), [(8, 8), (8, 9), (8, 0)])
def test_max_prompt_length_must_leave_room(tok, max_length, max_prompt_length):
    with pytest.raises(ValueError, match="max_prompt_length < max_length"):
        tokenize_record(
            PreferencePair("a", "b", "c"), tok, max_length=max_length, max_prompt_length=max_prompt_length
        )
    with pytest.raises(ValueError, match="max_prompt_length < max_length"):
        tokenize_records([], tok, max_length=max_length, max_prompt_length=max_prompt_length)


# --- drops ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (PreferencePair("", "yo", "no"), "empty_prompt"),
        (PreferencePair(" \n", "yo", "no"), "empty_prompt"),
        (PreferencePair("hi", "yo", " "), "empty_response"),  # HH-RLHF's empty responses
        (PreferencePair("hi", "", "no"), "empty_response"),
        (UnpairedExample("hi", "\n", desirable=True), "empty_response"),
        (PreferencePair("hi", " same", " same"), "chosen_equals_rejected"),
        (PreferencePair([], [BOT_YO], [BOT_NO]), "empty_prompt"),
        (PreferencePair([USER_HI], [], [BOT_NO]), "empty_response"),
        (PreferencePair([USER_HI], [BOT_YO], [BOT_YO]), "chosen_equals_rejected"),
    ],
)
def test_drop_reasons(tok, record, reason):
    assert tokenize_record(record, tok, **BIG) == reason


def test_identical_after_truncation_is_dropped(tok):
    # Budget 5 - 2 = 3: "abcX" and "abcY" both become a b c.
    pair = PreferencePair("hi", "abcX", "abcY")
    assert tokenize_record(pair, tok, max_length=5, max_prompt_length=2) == "chosen_equals_rejected"


def test_response_with_no_tokens_is_dropped():
    # A tokenizer without EOS whose normaliser deletes "~": the response "~~" has no tokens.
    tokenizer = build_char_tokenizer()
    tokenizer._tokenizer.normalizer = normalizers.Replace("~", "")
    tokenizer.eos_token = None
    assert tokenize_record(PreferencePair("hi", "~~", "no"), tokenizer, **BIG) == "response_truncated_away"


def test_tokenize_records_keeps_order_and_counts_drops(tok):
    records = [
        PreferencePair("a", "b", "c"),
        PreferencePair("a", " ", "c"),
        PreferencePair("d", "e", "e"),
        PreferencePair("f", "g", "h"),
        PreferencePair("", "g", "h"),
        PreferencePair("a", "", "c"),
    ]
    kept, dropped = tokenize_records(records, tok, **BIG)
    assert kept == [
        TokenizedPair([14], [15, EOS], [16, EOS]),  # a | b </s> | c </s>
        TokenizedPair([19], [20, EOS], [21, EOS]),  # f | g </s> | h </s>
    ]
    assert dropped == Counter(empty_response=2, chosen_equals_rejected=1, empty_prompt=1)


# --- chat rendering ---------------------------------------------------------------------


def test_render_conversation_with_the_chat_template(tok):
    pair = PreferencePair([USER_HI], [BOT_YO], [BOT_NO])
    assert render(pair, tok) == PreferencePair(
        prompt="user: hi</s>\nassistant:",  # add_generation_prompt=True
        chosen=" yo</s>\n",  # "user: hi</s>\nassistant: yo</s>\n" minus the prompt
        rejected=" no</s>\n",
    )


def test_render_multi_turn_prompt_and_unpaired(tok):
    prompt = [USER_HI, BOT_YO, {"role": "user", "content": "ok?"}]
    example = UnpairedExample(prompt, [BOT_NO], desirable=True)
    assert render(example, tok) == UnpairedExample(
        prompt="user: hi</s>\nassistant: yo</s>\nuser: ok?</s>\nassistant:",
        completion=" no</s>\n",
        desirable=True,
    )


def test_render_leaves_text_alone(tok):
    pair = PreferencePair("hi", "yo", "no")
    assert render(pair, tok) is pair


def test_rendered_conversation_ids(tok):
    pair = PreferencePair([USER_HI], [BOT_YO], [BOT_NO])
    assert tokenize_record(pair, tok, **BIG) == TokenizedPair(
        # u  s   e   r   :   _   h   i   </s> \n   a   s   s   i   s   t   a   n   t   :
        prompt_ids=[34, 32, 18, 31, 81, 98, 21, 22, EOS, 100, 14, 32, 32, 22, 32, 33, 14, 27, 33, 81],
        # _  y   o   </s> \n   </s>   (the template's "</s>\n" does not end with EOS: one is added)
        chosen_ids=[98, 38, 28, EOS, 100, EOS],
        # _  n   o   </s> \n   </s>
        rejected_ids=[98, 27, 28, EOS, 100, EOS],
    )


def test_render_mixed_text_and_messages_is_an_error(tok):
    with pytest.raises(DataError, match="all be text or all be message lists"):
        render(PreferencePair([USER_HI], "yo", "no"), tok)


def test_render_template_whose_prompt_is_not_a_prefix_is_an_error():
    tokenizer = build_char_tokenizer()
    # The generation prompt says "bot:" but a rendered assistant turn says "assistant:".
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}bot:{% endif %}"
    )
    with pytest.raises(DataError, match="field 'chosen': the chat template's rendering"):
        render(PreferencePair([USER_HI], [BOT_YO], [BOT_NO]), tokenizer)


def test_conversations_for_a_tokenizer_without_a_chat_template_are_one_error_naming_why():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None  # a base model's tokenizer, as many hub checkpoints ship
    with pytest.raises(DataError, match="conversations .* the model's tokenizer has no chat template"):
        render(PreferencePair([USER_HI], [BOT_YO], [BOT_NO]), tokenizer)
