"""TRL's preference formats read into the same records, the implicit-prompt split by hand, and
datasets named as the hub names them (the shipped fixtures are laid out as a dataset repository)."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from dpo_exp.data import formats
from dpo_exp.data.module import read_splits
from dpo_exp.data.records import DataError, PreferencePair
from dpo_exp.data.sources import load_source, to_unpaired
from dpo_exp.rows import DatasetSplit, read_rows
from tests.conftest import PREFERENCES

USER = {"role": "user", "content": "Why is the sky blue?"}
ANSWER = {"role": "assistant", "content": "Rayleigh scattering."}
WRONG = {"role": "assistant", "content": "It reflects the sea."}


def fixture_split(subset: str, split: str = "train") -> DatasetSplit:
    return DatasetSplit(str(PREFERENCES), split, subset=subset)


# --- the split of an implicit prompt, by hand ---------------------------------------------


def test_implicit_text_split_by_hand():
    # Shared: "Q: why? A: " (11 characters); the split gives the trailing space to the responses.
    pair, kind = formats.split_implicit("Q: why? A: light", "Q: why? A: lamps")
    assert kind == formats.IMPLICIT_TEXT
    # "Q: why? A: l" is shared too: the split is at the first differing character, as TRL's.
    assert pair == PreferencePair("Q: why? A: l", "ight", "amps")
    pair, _ = formats.split_implicit("Q: why? A: blue", "Q: why? A: green")
    assert pair == PreferencePair("Q: why? A:", " blue", " green")


def test_implicit_transcript_split_by_hand():
    # The responses start alike (" I"): the split stays at the last shared marker.
    prompt = "\n\nHuman: hi\n\nAssistant:"
    pair, kind = formats.split_implicit(prompt + " I can.", prompt + " I cannot.")
    assert kind == formats.IMPLICIT_TRANSCRIPT and pair == PreferencePair(prompt, " I can.", " I cannot.")


def test_implicit_conversation_split_by_hand():
    pair, kind = formats.split_implicit([USER, ANSWER], [USER, WRONG])
    assert kind == formats.IMPLICIT_CONVERSATIONAL and pair == PreferencePair([USER], [ANSWER], [WRONG])


def test_split_of_different_kinds_is_none():
    assert formats.split_implicit("text", [USER]) is None


def test_a_file_mixing_formats_reports_each_with_its_count():
    counts = Counter({formats.STANDARD: 3, formats.CONVERSATIONAL: 1})
    assert formats.describe_formats(counts) == "standard (3 rows), conversational (1 rows)"


# --- every format into the same records ---------------------------------------------------


def fixture_records(subset: str, source: str = "pairs", split: str = "train"):
    return load_source(source, fixture_split(subset, split))


def test_the_fixture_is_the_published_rows_and_its_licence():
    # implicit_text holds HH-RLHF helpful-base test rows as published; the licence is beside them.
    assert (PREFERENCES / "LICENSE.hh-rlhf.txt").read_text().startswith("MIT License")
    with gzip.open(PREFERENCES / "implicit_text" / "train.jsonl.gz", "rt", encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    assert set(first) == {"chosen", "rejected"} and first["chosen"].startswith("\n\nHuman: ")
    assert sum(path.stat().st_size for path in PREFERENCES.rglob("*") if path.is_file()) < 1_000_000


@pytest.mark.parametrize("split", ["train", "test"])
def test_text_formats_read_into_the_same_records(split):
    standard = fixture_records("standard", split=split)
    implicit = fixture_records("implicit_text", split=split)
    hh = fixture_records("implicit_text", "hh_rlhf", split=split)
    assert (standard.format, implicit.format) == (formats.STANDARD, formats.IMPLICIT_TRANSCRIPT)
    assert len(standard.records) == {"train": 150, "test": 50}[split]
    assert implicit.records == standard.records == hh.records


@pytest.mark.parametrize("split", ["train", "test"])
def test_conversational_formats_read_into_the_same_records(split):
    conversational = fixture_records("conversational", split=split)
    implicit = fixture_records("implicit_conversational", split=split)
    assert conversational.format == formats.CONVERSATIONAL
    assert implicit.format == formats.IMPLICIT_CONVERSATIONAL  # a text prompt beside conversations
    assert implicit.records == conversational.records
    # The conversations are the text pairs, turn by turn.
    first, text = conversational.records[0], fixture_records("standard", split=split).records[0]
    assert first.prompt[-1]["content"] in text.prompt and first.chosen[0]["content"] == text.chosen.strip()


def test_conversations_without_a_prompt_column_read_the_same(tmp_path):
    rows = [
        {"chosen": [USER, ANSWER], "rejected": [USER, WRONG]},
    ]
    with_prompt = [{"prompt": USER["content"], **row} for row in rows]
    for name, content in (("bare.jsonl", rows), ("ultrafeedback_like.jsonl", with_prompt)):
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in content))
    bare = load_source("pairs", str(tmp_path / "bare.jsonl"))
    like = load_source("pairs", str(tmp_path / "ultrafeedback_like.jsonl"))
    assert bare.records == like.records == [PreferencePair([USER], [ANSWER], [WRONG])]


@pytest.mark.parametrize("split", ["train", "test"])
def test_unpaired_rows_are_the_pairs_answer_by_answer(split):
    unpaired = fixture_records("unpaired", "unpaired", split=split)
    assert unpaired.format == formats.UNPAIRED
    assert unpaired.records == to_unpaired(fixture_records("standard", split=split).records)


def test_a_row_that_fits_no_format_names_dataset_row_and_field(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": 3, "rejected": "b"}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2, field 'chosen': expected a string or a list"):
        load_source("pairs", str(tmp_path / "bad.jsonl"))


# --- datasets by id or folder ---------------------------------------------------------------


def test_a_dataset_folder_by_subset_and_by_data_dir_reads_the_same_rows():
    by_subset = read_rows(fixture_split("standard"), None)[1]
    by_data_dir = read_rows(DatasetSplit(str(PREFERENCES), "train", data_dir="standard"), None)[1]
    assert by_subset == by_data_dir and len(by_subset) == 150


def test_a_dataset_split_is_named_with_its_revision_and_parts():
    split = DatasetSplit("Anthropic/hh-rlhf", "test", revision="09be8c5bbc57cb38", data_dir="helpful-base")
    assert str(split) == "Anthropic/hh-rlhf@09be8c5 (data_dir helpful-base, split test)"
    assert not split.is_local and DatasetSplit("./here", "train").is_local


def test_an_unknown_split_names_the_dataset():
    with pytest.raises(
        DataError, match=r"preferences \(subset standard, split nope\): could not load the dataset folder"
    ):
        read_rows(fixture_split("standard", "nope"), None)


def test_a_local_folder_with_a_revision_is_refused():
    split = DatasetSplit(str(PREFERENCES), "train", revision="abc", subset="standard")
    with pytest.raises(DataError, match="a local folder has no revisions"):
        read_rows(split, None)


def test_a_hub_id_offline_with_no_cached_copy_is_one_line_naming_it_and_the_local_copy():
    split = DatasetSplit("Anthropic/hh-rlhf", "train", revision="09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa")
    with pytest.raises(DataError) as raised:
        read_rows(split, None)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("Anthropic/hh-rlhf@09be8c5 (split train): ")
    assert "data.dataset=<a folder laid out as the hub repository> data.revision=null" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_read_splits_takes_train_and_validation_from_the_dataset_splits():
    data_cfg = {
        "source": "pairs", "dataset": str(PREFERENCES), "subset": "standard", "revision": None,
        "data_dir": None, "train_split": "train", "validation_split": "test", "options": {},
    }  # fmt: skip
    train, validation = read_splits(_Cfg(data_cfg))
    assert (len(train.records), len(validation.records)) == (150, 50)
    assert validation.where.endswith("(subset standard, split test)")


def test_a_local_train_file_wins_over_the_dataset(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    data_cfg = {
        "source": "pairs", "dataset": "Anthropic/hh-rlhf", "train_path": str(tmp_path / "mine.jsonl"),
        "validation_path": str(tmp_path / "mine.jsonl"), "options": {},
    }  # fmt: skip
    train, _ = read_splits(_Cfg(data_cfg))
    assert train.records == [PreferencePair("p", "a", "b")] and train.where.endswith("mine.jsonl")


class _Cfg(dict):
    """A data config as `read_splits` reads it: `cfg.key` and `cfg.get(key)`."""

    __getattr__ = dict.__getitem__
