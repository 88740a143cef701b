"""Stage folders keyed by their settings: built once, reused, safe under concurrent builders."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from dpo_exp.experiment.cache import DIGESTS, SETTINGS, cached_stage, stage_key


def test_key_ignores_key_order_and_changes_with_any_value():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


def test_second_call_reuses_the_folder_without_building(tmp_path: Path):
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "artefact.txt").write_text("done")

    first = cached_stage(tmp_path, "sft", {"steps": 1}, build)
    second = cached_stage(tmp_path, "sft", {"steps": 1}, build)
    other = cached_stage(tmp_path, "sft", {"steps": 2}, build)
    assert len(calls) == 2 and not first.reused and second.reused and not other.reused
    assert first.path == second.path != other.path
    assert (first.path / "artefact.txt").read_text() == "done" and (first.path / SETTINGS).exists()


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path):
    def build(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        cached_stage(tmp_path, "sft", {"steps": 1}, build)
    assert [p.name for p in (tmp_path / "sft").iterdir() if not p.name.endswith(".lock")] == []


def _slow_build(folder: Path) -> None:
    with open(folder.parent / "builds.log", "a") as log:
        log.write("built\n")
    time.sleep(0.5)  # long enough for the other process to arrive while this one builds
    (folder / "artefact.txt").write_text("done")


def _build_in_process(root: str) -> None:
    cached_stage(Path(root), "sample", {"k": 8}, _slow_build)


def test_concurrent_builders_build_once(tmp_path: Path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_build_in_process, args=(str(tmp_path),)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)
    assert all(process.exitcode == 0 for process in processes)
    assert (tmp_path / "sample" / "builds.log").read_text() == "built\n"
    (folder,) = [p for p in (tmp_path / "sample").iterdir() if p.is_dir()]
    assert (folder / "artefact.txt").read_text() == "done"


def _build_artefact(folder: Path) -> None:
    (folder / "artefact.txt").write_text("done")


def test_a_stage_folder_whose_files_changed_is_rebuilt_with_a_message(tmp_path: Path, capsys):
    first = cached_stage(tmp_path, "sft", {"steps": 1}, _build_artefact)
    (first.path / "artefact.txt").write_text("dome")  # same length, one byte changed
    again = cached_stage(tmp_path, "sft", {"steps": 1}, _build_artefact)
    assert not again.reused and again.path == first.path
    assert "cannot be trusted (changed: artefact.txt); rebuilding it" in capsys.readouterr().out
    assert (again.path / "artefact.txt").read_text() == "done"


def test_a_stage_folder_without_its_digest_list_is_rebuilt(tmp_path: Path, capsys):
    # A folder renamed into place by something other than a finished build (or an older version).
    final = tmp_path / "sample" / stage_key({"k": 8})
    final.mkdir(parents=True)
    (final / "artefact.txt").write_text("partial")
    result = cached_stage(tmp_path, "sample", {"k": 8}, _build_artefact)
    assert not result.reused and (result.path / "artefact.txt").read_text() == "done"
    assert f"no readable {DIGESTS}" in capsys.readouterr().out


def test_a_half_built_folder_left_by_a_killed_builder_is_removed_and_never_used(tmp_path: Path):
    key = stage_key({"steps": 1})
    leftover = tmp_path / "sft" / f".{key}.partial.x1y2"
    leftover.mkdir(parents=True)
    (leftover / "artefact.txt").write_text("half")
    result = cached_stage(tmp_path, "sft", {"steps": 1}, _build_artefact)
    assert not result.reused and not leftover.exists()
    assert [p.name for p in (tmp_path / "sft").iterdir() if not p.name.endswith(".lock")] == [key]
