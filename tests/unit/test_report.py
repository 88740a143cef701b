"""The data report: counts, drops by reason, token-length percentiles, and the empty check."""

from __future__ import annotations

from collections import Counter

import pytest

from dpo_exp.data.records import DataError
from dpo_exp.data.report import (
    DataReport,
    build_report,
    check_not_empty,
    count_overlap,
    format_report,
    truncation_warning,
)
from dpo_exp.data.tokenize import TokenizedPair, TokenizedUnpaired


def pair(prompt: int, chosen: int, rejected: int) -> TokenizedPair:
    """A pair whose only meaningful property is its lengths."""
    return TokenizedPair([7] * prompt, [8] * chosen, [9] * rejected)


def test_percentiles_interpolate_between_ranks():
    # Prompt lengths 1..10 (shuffled). Linear interpolation at rank (n - 1) * q:
    #   p50: rank 4.5  -> 5 + 0.5  * (6 - 5)  = 5.5
    #   p90: rank 8.1  -> 9 + 0.1  * (10 - 9) = 9.1
    #   p99: rank 8.91 -> 9 + 0.91 * (10 - 9) = 9.91
    kept = [pair(n, 2, 3) for n in (4, 9, 1, 10, 2, 7, 3, 8, 6, 5)]
    report = build_report(12, kept, Counter(empty_response=2))
    assert report.rows_read == 12 and report.rows_kept == 10
    assert report.dropped == {"empty_response": 2}
    assert report.lengths["prompt"] == pytest.approx({"p50": 5.5, "p90": 9.1, "p99": 9.91, "max": 10.0})
    # Constant lengths: every percentile is that length.
    assert report.lengths["chosen"] == {"p50": 2.0, "p90": 2.0, "p99": 2.0, "max": 2.0}
    assert report.lengths["rejected"] == {"p50": 3.0, "p90": 3.0, "p99": 3.0, "max": 3.0}


def test_single_example():
    report = build_report(1, [pair(4, 1, 1)], Counter())
    assert report.lengths["prompt"] == {"p50": 4.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    assert report.dropped == {}


def test_unpaired_lengths_are_prompt_and_completion():
    kept = [
        TokenizedUnpaired([1, 2], [3], desirable=True),
        TokenizedUnpaired([1, 2, 3, 4], [5, 6, 7], desirable=False),
    ]
    report = build_report(2, kept, Counter())
    assert set(report.lengths) == {"prompt", "completion"}
    assert report.lengths["completion"] == pytest.approx({"p50": 2.0, "p90": 2.8, "p99": 2.98, "max": 3.0})


def test_dropped_is_sorted_and_skips_zero_counts():
    dropped = Counter(empty_response=1, chosen_equals_rejected=4, empty_prompt=0)
    report = build_report(6, [pair(1, 1, 1)], dropped)
    assert list(report.dropped.items()) == [("chosen_equals_rejected", 4), ("empty_response", 1)]


def test_format_report():
    report = DataReport(
        rows_read=1354,
        rows_kept=1351,
        dropped={"chosen_equals_rejected": 1, "empty_response": 2},
        lengths={
            "prompt": {"p50": 384.0, "p90": 384.0, "p99": 384.0, "max": 384.0},
            "chosen": {"p50": 128.5, "p90": 277.0, "p99": 453.0, "max": 479.0},
        },
    )
    assert format_report(report, "train data (hh_helpful)") == (
        "train data (hh_helpful): 1354 rows read, 1351 kept, 3 dropped\n"
        "  dropped: chosen_equals_rejected 1, empty_response 2\n"
        "  tokens after truncation       p50      p90      p99      max\n"
        "  prompt                      384.0    384.0    384.0    384.0\n"
        "  chosen                      128.5    277.0    453.0    479.0"
    )


def test_format_report_with_nothing_kept_or_dropped():
    report = build_report(0, [], Counter())
    assert report.lengths == {}
    assert (
        format_report(report, "validation") == "validation: 0 rows read, 0 kept, 0 dropped\n  dropped: none"
    )


def test_check_not_empty_lists_the_drops():
    with pytest.raises(DataError, match=r"data\.jsonl: no examples left after filtering") as caught:
        check_not_empty([], Counter(empty_response=3, chosen_equals_rejected=1), "data.jsonl")
    assert "chosen_equals_rejected 1, empty_response 3" in str(caught.value)
    assert caught.value.file == "data.jsonl"
    check_not_empty([pair(1, 1, 1)], Counter(empty_response=3), "data.jsonl")  # does not raise


def test_validation_rows_identical_to_training_rows_are_counted_and_all_of_them_refused():
    train = [pair(1, 2, 3), pair(2, 2, 3), pair(3, 2, 3)]
    # Two of four validation rows repeat a training row exactly; a near copy (other rejected) does not.
    validation = [pair(1, 2, 3), pair(3, 2, 3), pair(1, 2, 4), pair(5, 2, 3)]
    assert count_overlap(train, validation, "val.jsonl") == 2
    report = build_report(4, validation, Counter())
    report.overlap_with_train = 2
    assert "warning: 2 of 4 rows are identical to a training row" in format_report(report, "validation")
    assert "identical" not in format_report(build_report(4, validation, Counter()), "validation")
    with pytest.raises(DataError, match="val.jsonl: all 2 validation rows are identical to training rows"):
        count_overlap(train, validation[:2], "val.jsonl")


def test_responses_cut_at_max_length_are_counted_per_side_and_warned_past_a_tenth():
    cut = [
        TokenizedPair([7], [8], [9], truncated=("chosen",)),
        TokenizedPair([7], [8], [9], ("chosen", "rejected")),
    ]
    kept = cut + [pair(1, 1, 1)] * 18  # 2 of 20 chosen cut: 10%, not past it
    report = build_report(20, kept, Counter())
    assert report.truncated == {"chosen": 2, "rejected": 1}
    assert "  responses cut at max_length: chosen 2, rejected 1" in format_report(report, "train data (x)")
    assert truncation_warning(report, "train data (x)") is None
    report = build_report(19, kept[:19], Counter())  # 2 of 19: past a tenth
    warning = truncation_warning(report, "train data (x)")
    assert warning.startswith(
        "train data (x): responses cut at max_length in more than 10% of 19 rows (chosen 2"
    )
    assert build_report(3, [pair(1, 1, 1)] * 3, Counter()).truncated == {}
