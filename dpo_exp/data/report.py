"""What survived tokenisation: rows read and kept, drops by reason, token-length percentiles."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field

from dpo_exp.data.records import DataError
from dpo_exp.data.tokenize import Tokenized, TokenizedPair

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
# Past this share of kept rows with a response cut at max_length, the report warns: the loss then
# compares answers whose ends it never sees.
TRUNCATION_WARNING = 0.10


@dataclass
class DataReport:
    rows_read: int
    rows_kept: int
    dropped: dict[str, int]  # reason -> count, reasons sorted
    # "prompt"/"chosen"/"rejected" (pairs) or "prompt"/"completion" (unpaired)
    #   -> {"p50", "p90", "p99", "max"}, in tokens after truncation; {} when nothing is kept.
    lengths: dict[str, dict[str, float]]
    # Validation only: rows identical (after tokenisation) to a training row, which measure nothing held out.
    overlap_with_train: int = 0
    source: str | None = None  # the file or dataset split read
    row_format: str | None = None  # the row format recognised (`dpo_exp.data.formats`)
    # Kept rows whose response was cut at max_length (so it has no EOS), per side; {} when none.
    truncated: dict[str, int] = field(default_factory=dict)


def build_report(
    rows_read: int,
    kept: list[Tokenized],
    dropped: Counter[str],
    *,
    source: str | None = None,
    row_format: str | None = None,
) -> DataReport:
    """Summarise one split after `tokenize_records`."""
    if not kept:
        columns: tuple[str, ...] = ()
    elif isinstance(kept[0], TokenizedPair):
        columns = ("prompt", "chosen", "rejected")
    else:
        columns = ("prompt", "completion")
    lengths = {column: _summary([len(getattr(item, f"{column}_ids")) for item in kept]) for column in columns}
    return DataReport(
        rows_read=rows_read,
        rows_kept=len(kept),
        dropped={reason: dropped[reason] for reason in sorted(dropped) if dropped[reason]},
        lengths=lengths,
        source=source,
        row_format=row_format,
        truncated=dict(sorted(Counter(name for item in kept for name in item.truncated).items())),
    )


def format_report(report: DataReport, title: str) -> str:
    """A few lines of text for the log: counts, drops by reason, a table of token lengths."""
    lines = [
        f"{title}: {report.rows_read} rows read, {report.rows_kept} kept, "
        f"{report.rows_read - report.rows_kept} dropped",
        f"  dropped: {_format_drops(report.dropped)}",
    ]
    if report.source is not None:
        lines.insert(
            1,
            f"  read from {report.source}" + (f", format: {report.row_format}" if report.row_format else ""),
        )
    if report.truncated:
        cut = ", ".join(f"{side} {count}" for side, count in report.truncated.items())
        lines.append(f"  responses cut at max_length: {cut}")
    if report.overlap_with_train:
        lines.append(
            f"  warning: {report.overlap_with_train} of {report.rows_kept} rows are identical to a training "
            "row (their figures measure training data)"
        )
    if report.lengths:
        names = [*PERCENTILES, "max"]
        lines.append("  tokens after truncation " + "".join(f"{name:>9}" for name in names))
        for column, summary in report.lengths.items():
            cells = "".join(f"{summary[name]:>9.1f}" for name in names)
            lines.append(f"  {column:<23} {cells}")
    return "\n".join(lines)


def truncation_warning(report: DataReport, title: str) -> str | None:
    """A warning when more than `TRUNCATION_WARNING` of the kept rows have a response cut at max_length."""
    if not report.truncated or max(report.truncated.values()) <= TRUNCATION_WARNING * report.rows_kept:
        return None
    cut = ", ".join(f"{side} {count}" for side, count in report.truncated.items())
    return (
        f"{title}: responses cut at max_length in more than {TRUNCATION_WARNING:.0%} of "
        f"{report.rows_kept} rows ({cut}): they keep no EOS and lose their end; "
        "raise data.max_length to keep them whole"
    )


def check_not_empty(kept: list[Tokenized], dropped: Counter[str], file: str | None) -> None:
    """Fail, with the drop counts, when filtering left nothing to train or evaluate on."""
    if not kept:
        raise DataError(
            f"no examples left after filtering (dropped: {_format_drops(dropped)}); "
            "check the data, max_length and max_prompt_length",
            file=file,
        )


def count_overlap(train: list[Tokenized], validation: list[Tokenized], file: str | None) -> int:
    """Validation rows identical to a training row; every one of them is refused (nothing held out)."""
    seen = {_row_key(item) for item in train}
    overlap = sum(_row_key(item) in seen for item in validation)
    if validation and overlap == len(validation):
        raise DataError(
            f"all {overlap} validation rows are identical to training rows, so validation would measure "
            "nothing held out; give data.validation_path a held-out file, or remove the repeated rows",
            file=file,
        )
    return overlap


def _row_key(item: Tokenized) -> tuple:
    """What makes two examples the same: their compared fields (ids, scores), not the prompt as written."""
    values = [getattr(item, field.name) for field in dataclasses.fields(item) if field.compare]
    return tuple(tuple(value) if isinstance(value, list) else value for value in values)


def _format_drops(dropped: dict[str, int] | Counter[str]) -> str:
    drops = [f"{reason} {count}" for reason, count in sorted(dropped.items()) if count]
    return ", ".join(drops) if drops else "none"


def _summary(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    summary = {name: _percentile(ordered, q) for name, q in PERCENTILES.items()}
    summary["max"] = float(ordered[-1])
    return summary


def _percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])
