"""Data sources: file formats, located errors, the registry, and HH-RLHF on the real files (read
through the hub-style path: the mirror laid out as the Anthropic/hh-rlhf repository)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpo_exp.data.records import DataError, PreferencePair, UnpairedExample
from dpo_exp.data.sources import (
    SOURCES,
    get_source,
    load_records,
    register_source,
    to_unpaired,
)
from dpo_exp.data.tokenize import tokenize_records
from dpo_exp.models.tokenizer import build_char_tokenizer
from dpo_exp.rows import DatasetSplit

HH_ASSISTANT = "\n\nAssistant:"
NO_TRUNCATION = {"max_length": 10**5, "max_prompt_length": 10**5 - 1}

USER_HI = {"role": "user", "content": "hi"}
BOT_YO = {"role": "assistant", "content": "yo"}
BOT_NO = {"role": "assistant", "content": "no"}


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# --- pairs: formats ---------------------------------------------------------------------

QA_ROWS = [
    {"question": "1+1?", "good": " 2", "bad": " 3"},
    {"question": "2+2?", "good": " 4", "bad": " 5"},
]
QA_PAIRS = [PreferencePair("1+1?", " 2", " 3"), PreferencePair("2+2?", " 4", " 5")]
QA_FIELDS = {"prompt_field": "question", "chosen_field": "good", "rejected_field": "bad"}


def test_pairs_jsonl_with_custom_field_names(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    assert load_records("pairs", path, **QA_FIELDS) == QA_PAIRS


def test_pairs_jsonl_gz(tmp_path):
    path = tmp_path / "qa.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in QA_ROWS)
    assert load_records("pairs", str(path), **QA_FIELDS) == QA_PAIRS


def test_pairs_json_list(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(QA_ROWS), encoding="utf-8")
    assert load_records("pairs", str(path), **QA_FIELDS) == QA_PAIRS


def test_pairs_parquet(tmp_path):
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist(QA_ROWS), path)
    assert load_records("pairs", str(path), **QA_FIELDS) == QA_PAIRS


def test_pairs_max_rows(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    assert load_records("pairs", path, max_rows=1, **QA_FIELDS) == QA_PAIRS[:1]


def test_pairs_message_lists_with_explicit_prompt(tmp_path):
    row = {"prompt": [USER_HI], "chosen": [BOT_YO], "rejected": [BOT_NO]}
    path = write_jsonl(tmp_path / "chat.jsonl", [row])
    assert load_records("pairs", path) == [PreferencePair([USER_HI], [BOT_YO], [BOT_NO])]


def test_pairs_implicit_prompt_is_the_shared_message_prefix(tmp_path):
    # TRL style: no prompt column; chosen and rejected are whole conversations.
    user_more = {"role": "user", "content": "more"}
    rows = [
        {"chosen": [USER_HI, BOT_YO, user_more, BOT_YO], "rejected": [USER_HI, BOT_YO, user_more, BOT_NO]},
        # Identical conversations still split off their last message (then dropped as a tie).
        {"chosen": [USER_HI, BOT_YO], "rejected": [USER_HI, BOT_YO]},
    ]
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    assert load_records("pairs", path) == [
        PreferencePair([USER_HI, BOT_YO, user_more], [BOT_YO], [BOT_NO]),
        PreferencePair([USER_HI], [BOT_YO], [BOT_YO]),
    ]


def test_pairs_mixing_text_and_messages_keeps_values_as_written(tmp_path):
    # `datasets` would decode the text "null" of a mixed-type column to None, and "42" to 42.
    rows = [
        {"prompt": [USER_HI], "chosen": [BOT_YO], "rejected": [BOT_NO]},
        {"prompt": "null", "chosen": "42", "rejected": "true"},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    assert load_records("pairs", path) == [
        PreferencePair([USER_HI], [BOT_YO], [BOT_NO]),
        PreferencePair("null", "42", "true"),
    ]


def test_pairs_implicit_prompt_of_text_is_the_shared_prefix(tmp_path):
    # TRL's `extract_prompt` on text: the shared characters, less the space they end on.
    rows = [
        {"chosen": "Q: sky? A: blue", "rejected": "Q: sky? A: green"},
        {"chosen": "Q: 2+2? 4", "rejected": "Q: 2+2? 5"},
    ]
    path = write_jsonl(tmp_path / "noprompt.jsonl", rows)
    assert load_records("pairs", path) == [
        PreferencePair("Q: sky? A:", " blue", " green"),
        PreferencePair("Q: 2+2?", " 4", " 5"),
    ]


def test_pairs_where_some_rows_have_a_prompt_a_row_without_is_an_error(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "pa", "rejected": "pb"}]
    path = write_jsonl(tmp_path / "gaps.jsonl", rows)
    with pytest.raises(DataError, match=r"gaps\.jsonl, line 2, field 'prompt'"):
        load_records("pairs", path)


def test_pairs_refuses_unpaired_rows_naming_the_source_that_reads_them(tmp_path):
    path = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    with pytest.raises(
        DataError, match=r"kto\.jsonl, line 1, field 'chosen': this row is unpaired.*data=unpaired"
    ):
        load_records("pairs", path)


def test_pairs_responses_of_different_kinds_are_an_error(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "p", "chosen": "a", "rejected": [BOT_NO]}])
    with pytest.raises(DataError, match=r"line 1, field 'rejected': chosen and rejected must both be"):
        load_records("pairs", path)


def test_pairs_empty_texts_load_fine(tmp_path):
    # Empty prompts and responses are tokenisation's business (dropped and counted there).
    path = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": "", "chosen": " ", "rejected": ""}])
    assert load_records("pairs", path) == [PreferencePair("", " ", "")]


# --- pairs: located errors --------------------------------------------------------------

GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ({"prompt": "p", "rejected": "r"}, "chosen"),  # missing
        ({"chosen": "c", "rejected": "r"}, "prompt"),  # missing where other rows have it
        ({"chosen": [BOT_YO], "rejected": [BOT_NO]}, "prompt"),  # also for conversations
        ({"prompt": None, "chosen": "c", "rejected": "r"}, "prompt"),  # null
        ({"prompt": "p", "chosen": "c", "rejected": 7}, "rejected"),  # int, not a string
        ({"prompt": "p", "chosen": {"text": "c"}, "rejected": "r"}, "chosen"),  # an object
        ({"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}, "prompt"),  # no content
        ({"prompt": ["hi"], "chosen": "c", "rejected": "r"}, "prompt"),  # not a message dict
        ({"prompt": [{"role": "usr", "content": "hi"}], "chosen": "c", "rejected": "r"}, "prompt"),  # a typo
        ({"chosen": [USER_HI, {"role": "Human", "content": "yo"}], "rejected": [USER_HI, BOT_NO]}, "chosen"),
    ],
)
def test_pairs_bad_value_names_file_row_and_field(tmp_path, bad_row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, bad_row])
    with pytest.raises(DataError) as caught:
        load_records("pairs", path)
    assert (Path(caught.value.file).name, caught.value.line, caught.value.field) == ("bad.jsonl", 3, field)
    assert f"bad.jsonl, line 3, field '{field}'" in str(caught.value)  # as an editor counts lines


def test_pairs_bad_value_in_json_list(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "chosen": 1.5}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json, row 1, field 'chosen'"):
        load_records("pairs", str(path))


def test_pairs_bad_value_in_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "rejected": None}]), path)
    with pytest.raises(DataError, match=r"bad\.parquet, row 1, field 'rejected'"):
        load_records("pairs", str(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_malformed_json_line_names_file_and_line(tmp_path, suffix):
    lines = [json.dumps(GOOD), json.dumps(GOOD), '{"prompt": "p" "chosen": "c"}', json.dumps(GOOD)]
    text = "\n".join(lines) + "\n"
    path = tmp_path / f"broken{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"broken{suffix}, line 3: malformed JSON"):
        load_records("pairs", str(path))


def test_the_line_counts_blank_lines(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n\n{json.dumps({**GOOD, 'chosen': 3})}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gaps\.jsonl, line 3, field 'chosen'"):
        load_records("pairs", str(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.jsonl: data file not found"):
        load_records("pairs", str(tmp_path / "nowhere.jsonl"))


def test_no_path(tmp_path):
    with pytest.raises(DataError, match="reads a file or a dataset, and neither was given"):
        load_records("hh_rlhf", None)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("prompt,chosen,rejected\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.tsv: unsupported file type; expected one of: \.jsonl"):
        load_records("pairs", str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl"):
        load_records("pairs", str(path))


@pytest.mark.parametrize("max_rows", [0, -1, 1.5, "3"])
def test_bad_max_rows(tmp_path, max_rows):
    path = write_jsonl(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(DataError, match="max_rows must be a positive int"):
        load_records("pairs", path, max_rows=max_rows)


# --- registry ---------------------------------------------------------------------------


def test_unknown_source_lists_the_valid_ones():
    valid = "demonstrations, hh_rlhf, pairs, synthetic, unpaired"
    with pytest.raises(DataError, match=rf"unknown data source 'jsonl'; valid sources: {valid}"):
        get_source("jsonl")


def test_unknown_option_is_rejected_with_the_valid_ones(tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(DataError) as caught:
        load_records("pairs", path, promt_field="q")
    message = str(caught.value)
    assert "promt_field" in message and "'pairs'" in message
    valid = (
        "prompt_field, chosen_field, rejected_field, chosen_score_field, rejected_score_field, weight_field"
    )
    assert f"valid options: {valid}, max_rows" in message


def test_hh_rlhf_takes_no_field_options(tmp_path):
    with pytest.raises(DataError, match=r"unknown option\(s\) prompt_field .*valid options: max_rows"):
        load_records("hh_rlhf", "unused.jsonl", prompt_field="x")


def test_register_source_and_load_records(monkeypatch):
    monkeypatch.setattr("dpo_exp.data.sources.SOURCES", dict(SOURCES))

    @register_source("constant")
    def constant(path, *, count: int = 1):
        return [PreferencePair(str(path), "a", "b")] * count

    assert get_source("constant") is constant
    assert load_records("constant", None, count=2) == [PreferencePair("None", "a", "b")] * 2
    with pytest.raises(ValueError, match="already registered"):
        register_source("constant")(constant)


def test_to_unpaired_interleaves_in_order():
    pairs = [PreferencePair("p1", "c1", "r1"), PreferencePair("p2", "c2", "r2")]
    assert to_unpaired(pairs) == [
        UnpairedExample("p1", "c1", desirable=True),
        UnpairedExample("p1", "r1", desirable=False),
        UnpairedExample("p2", "c2", desirable=True),
        UnpairedExample("p2", "r2", desirable=False),
    ]


# --- unpaired ---------------------------------------------------------------------------


def test_unpaired_rows(tmp_path):
    rows = [
        {"q": "p1", "a": "good", "ok": True},
        {"q": [USER_HI], "a": [BOT_NO], "ok": False},
    ]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    assert load_records("unpaired", path, prompt_field="q", completion_field="a", label_field="ok") == [
        UnpairedExample("p1", "good", desirable=True),
        UnpairedExample([USER_HI], [BOT_NO], desirable=False),
    ]


@pytest.mark.parametrize("label", [1, 0, "true", None])
def test_unpaired_label_must_be_a_bool(tmp_path, label):
    rows = [
        {"prompt": "p", "completion": "c", "label": True},
        {"prompt": "p", "completion": "c", "label": label},
    ]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(DataError, match=r"kto\.jsonl, line 2, field 'label': expected a bool label"):
        load_records("unpaired", path)


# --- responses marked cut ----------------------------------------------------------------


def test_cut_flags_are_read_when_present_and_false_when_absent(tmp_path):
    pairs_file = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "p", "chosen": "c", "rejected": "r", "rejected_cut": True},
            {"prompt": "p", "chosen": "c", "rejected": "r", "chosen_cut": True, "rejected_cut": False},
            {"prompt": "p", "chosen": "c", "rejected": "r"},
        ],
    )
    assert [(p.chosen_cut, p.rejected_cut) for p in load_records("pairs", pairs_file)] == [
        (False, True),
        (True, False),
        (False, False),
    ]
    unpaired_file = write_jsonl(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "p", "completion": "c", "label": False, "cut": True},
            {"prompt": "p", "completion": "c", "label": True},
        ],
    )
    assert load_records("unpaired", unpaired_file) == [
        UnpairedExample("p", "c", desirable=False, cut=True),
        UnpairedExample("p", "c", desirable=True, cut=False),
    ]


def test_to_unpaired_keeps_each_responses_cut_flag():
    pair = PreferencePair("p", "c", "r", chosen_cut=False, rejected_cut=True)
    assert [example.cut for example in to_unpaired([pair])] == [False, True]


@pytest.mark.parametrize("flag", [1, 0, "true"])
@pytest.mark.parametrize(
    ("source", "row", "field"),
    [
        ("pairs", {"prompt": "p", "chosen": "c", "rejected": "r"}, "chosen_cut"),
        ("pairs", {"prompt": "p", "chosen": "c", "rejected": "r"}, "rejected_cut"),
        ("unpaired", {"prompt": "p", "completion": "c", "label": True}, "cut"),
    ],
)
def test_a_cut_flag_must_be_a_bool(tmp_path, source, row, field, flag):
    path = write_jsonl(tmp_path / "data.jsonl", [{**row, field: True}, {**row, field: flag}])
    with pytest.raises(DataError, match=rf"data\.jsonl, line 2, field '{field}': expected a bool"):
        load_records(source, path)


def test_only_a_text_response_can_be_marked_cut(tmp_path):
    row = {"prompt": [USER_HI], "chosen": [BOT_YO], "rejected": [BOT_NO], "chosen_cut": True}
    path = write_jsonl(tmp_path / "chat.jsonl", [row])
    with pytest.raises(
        DataError, match=r"line 1, field 'chosen_cut': only a text response can be marked cut"
    ):
        load_records("pairs", path)


# --- hh_rlhf ----------------------------------------------------------------------------


def test_hh_rlhf_splits_at_the_last_shared_assistant_marker(tmp_path):
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant:"
    rows = [
        # Both responses start with " I": the split stays at the marker, not at " I".
        {"chosen": prompt + " I know one.", "rejected": prompt + " I do not."},
        # The rejected response continues the dialogue by itself: its own last marker is wrong.
        {"chosen": prompt + " Sure.", "rejected": prompt + " No.\n\nHuman: ok\n\nAssistant: bye"},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    assert load_records("hh_rlhf", path) == [
        PreferencePair(prompt, " I know one.", " I do not."),
        PreferencePair(prompt, " Sure.", " No.\n\nHuman: ok\n\nAssistant: bye"),
    ]


def test_hh_rlhf_without_shared_marker_is_an_error(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b"},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError, match=r"hh\.jsonl, line 2, field 'chosen': no '\\n\\nAssistant:'"):
        load_records("hh_rlhf", path)


def read_raw(repo: Path, inside: str) -> list[dict[str, str]]:
    with gzip.open(repo / inside, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def hh_split(repo: Path, data_dir: str, split: str) -> DatasetSplit:
    return DatasetSplit(str(repo), split, data_dir=data_dir)


def own_split(transcript: str) -> str:
    """The wrong way: the prompt of one transcript alone, up to its own last marker."""
    return transcript[: transcript.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)]


@pytest.fixture(scope="module")
def helpful_train(hh_rlhf_repo):
    records = load_records("hh_rlhf", hh_split(hh_rlhf_repo, "helpful-base", "train"))
    return read_raw(hh_rlhf_repo, "helpful-base/train.jsonl.gz"), records


@pytest.mark.real_data
def test_hh_real_rows_prompt_is_a_prefix_and_transcripts_rebuild_exactly(helpful_train):
    raw, records = helpful_train
    assert len(records) == len(raw) == 1354
    for row, record in zip(raw, records, strict=True):
        assert record.prompt.endswith(HH_ASSISTANT)
        assert row["chosen"] == record.prompt + record.chosen
        assert row["rejected"] == record.prompt + record.rejected
        # Responses keep their leading space (or are empty).
        assert record.chosen[:1] in ("", " ") and record.rejected[:1] in ("", " ")


@pytest.mark.real_data
def test_hh_real_rows_where_the_per_transcript_split_disagrees(helpful_train):
    raw, records = helpful_train
    disagree = [i for i, row in enumerate(raw) if own_split(row["chosen"]) != own_split(row["rejected"])]
    assert len(disagree) == 7  # docs/data.md: 7 in helpful-base train
    for i in disagree:
        # One response continued the dialogue; our prompt is still a prefix of both.
        response = records[i].chosen + records[i].rejected
        assert "\n\nHuman:" in response or HH_ASSISTANT in response


@pytest.mark.real_data
def test_hh_real_rows_whose_responses_start_alike(helpful_train):
    # docs/data.md: a raw common-prefix split would cut into the responses in 241 rows, by >= 20 chars in 2.
    _, records = helpful_train
    shared = [len(os.path.commonprefix([r.chosen, r.rejected])) for r in records if r.chosen != r.rejected]
    assert sum(length > 1 for length in shared) == 241
    assert sum(length >= 20 for length in shared) == 2


@pytest.mark.real_data
def test_hh_real_degenerate_rows_are_dropped_by_tokenisation(helpful_train):
    # docs/data.md: 1 identical pair and 2 empty rejected responses in helpful-base train.
    _, records = helpful_train
    kept, dropped = tokenize_records(records, build_char_tokenizer(), **NO_TRUNCATION)
    assert dropped == {"chosen_equals_rejected": 1, "empty_response": 2}
    assert len(kept) == 1354 - 3


@pytest.mark.real_data
def test_hh_real_identical_pairs_in_the_extra_file(hh_rlhf_repo):
    records = load_records("hh_rlhf", hh_split(hh_rlhf_repo, "helpful-rejection-sampled", "test"))
    assert len(records) == 2000
    identical = [r for r in records if r.chosen == r.rejected]
    assert len(identical) == 23  # docs/data.md: 23 in helpful-rejection-sampled
    # Tokenising all 2,000 rows with the character tokenizer takes seconds; the ties suffice.
    kept, dropped = tokenize_records(identical, build_char_tokenizer(), **NO_TRUNCATION)
    assert (kept, dropped) == ([], {"chosen_equals_rejected": 23})


@pytest.mark.real_data
def test_hh_max_rows(hh_rlhf_repo):
    records = load_records("hh_rlhf", hh_split(hh_rlhf_repo, "harmless-base", "test"), max_rows=5)
    assert len(records) == 5


# --- pairs: column sets that match no format ------------------------------------------------

QUESTION_ROWS = [
    {"question": "Capital of France?", "chosen": "Paris is.", "rejected": "Pau is not."},
    {"question": "2 + 2?", "chosen": "4", "rejected": "5"},
]


def test_a_prompt_under_another_name_is_refused_naming_the_file_columns_and_the_option(tmp_path):
    # Read as implicit prompts, these would be split inside a word: prompt "Pa", chosen "ris is.".
    path = write_jsonl(tmp_path / "qa.jsonl", QUESTION_ROWS)
    with pytest.raises(DataError) as refused:
        load_records("pairs", path)
    assert str(refused.value) == (
        f"{path}: columns question, chosen, rejected: no 'prompt' column, and chosen and rejected share "
        "no prompt; if question is the prompt: data.options.prompt_field=question"
    )


def test_the_prompt_column_named_by_the_options_is_read(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QUESTION_ROWS)
    records = load_records("pairs", path, prompt_field="question")
    assert records[0] == PreferencePair("Capital of France?", "Paris is.", "Pau is not.")


def test_an_implicit_prompt_beside_another_text_column_is_still_read(tmp_path):
    rows = [{"id": "a1", "chosen": "Q: hi? A: yo", "rejected": "Q: hi? A: no"}]
    records = load_records("pairs", write_jsonl(tmp_path / "implicit.jsonl", rows))
    assert records == [PreferencePair("Q: hi? A:", " yo", " no")]


def test_columns_without_chosen_and_rejected_are_refused_naming_them(tmp_path):
    path = write_jsonl(tmp_path / "ab.jsonl", [{"prompt": "hi", "response_a": "yo", "response_b": "no"}])
    with pytest.raises(
        DataError, match=r"ab\.jsonl: columns prompt, response_a, response_b: no pairs format"
    ):
        load_records("pairs", path)


def test_a_mistyped_option_is_answered_with_the_closest(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QUESTION_ROWS)
    with pytest.raises(DataError, match=r"prompt_column .*did you mean data\.options\.prompt_field\?"):
        load_records("pairs", path, prompt_column="question")
