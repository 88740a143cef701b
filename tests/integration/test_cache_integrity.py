"""The reference cache is checked on load: damaged or cut-short files are recomputed, never used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_exp.cli import run
from tests.helpers import compose_config


def cached_run(cache_dir: Path, run_dir: Path) -> dict:
    cfg = compose_config(["reference.cache=true", f"reference.cache_dir={cache_dir}", "trainer.max_steps=2"])
    return run(cfg, run_dir)["metrics"]


def model_metrics(metrics: dict) -> dict:
    return {name: value for name, value in metrics.items() if not name.startswith("perf/")}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict]:
    cache_dir = tmp_path_factory.mktemp("cache")
    metrics = cached_run(cache_dir, tmp_path_factory.mktemp("run"))
    return cache_dir, model_metrics(metrics)


def values_offset(path: Path) -> int:
    """Where a safetensors file's tensor bytes start: after its 8-byte length and JSON header."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize("damage", ["zeroed_values", "bit_flips", "truncated"])
def test_a_damaged_cache_is_recomputed_with_a_message(first_run, tmp_path: Path, damage: str, caplog):
    cache_dir, expected = first_run
    (path,) = cache_dir.glob("ref_logps_*.safetensors")
    good = {name: tensor.clone() for name, tensor in load_file(path).items()}  # not a view of the file
    data = bytearray(path.read_bytes())
    start = values_offset(path)
    if damage == "zeroed_values":  # finite values, so only a digest can tell
        data[start : start + 256] = bytes(256)
    elif damage == "bit_flips":
        for position in range(start, len(data), 97):
            data[position] ^= 0x40
    else:
        data = data[: len(data) - 100]
    path.write_bytes(bytes(data))
    caplog.clear()
    metrics = model_metrics(cached_run(cache_dir, tmp_path / "run"))
    out = caplog.text
    assert f"reference log-probs: reference cache {path}" in out and "; recomputing" in out
    assert metrics == expected
    recomputed = load_file(path)  # the same values again, which pass their digest
    assert recomputed.keys() == good.keys() and all(torch.equal(recomputed[k], good[k]) for k in good)


def test_a_writer_killed_mid_write_leaves_nothing_that_is_used(first_run, tmp_path: Path, capsys):
    cache_dir, expected = first_run
    (path,) = cache_dir.glob("ref_logps_*.safetensors")
    leftover = path.with_name(f".{path.name}.partial.abc123")
    leftover.write_bytes(b"half a file")
    assert model_metrics(cached_run(cache_dir, tmp_path / "run")) == expected
    assert not leftover.exists()
