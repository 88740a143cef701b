"""Fixtures of the README's tests: real files where the README names the reader's own."""

from __future__ import annotations

import pytest

from tests.e2e.readme import evaluated_run_stand_ins, reader_stand_ins, train_a_run_to_evaluate


@pytest.fixture(scope="module")
def reader_files(
    tmp_path_factory, tiny_model_dir, hh_fixture_repo, family_dirs, tiny_classifier_dir
) -> dict[str, str]:
    """Each placeholder of the README's commands and the real path that stands in for it."""
    folder = tmp_path_factory.mktemp("reader")
    return reader_stand_ins(folder, tiny_model_dir, hh_fixture_repo, family_dirs["gpt2"], tiny_classifier_dir)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, reader_files) -> dict[str, str]:
    """The reader's files and a finished run of the README's (with its checkpoints) in place of the run
    folders docs/evaluate.md evaluates."""
    run_dir = train_a_run_to_evaluate(tmp_path_factory.mktemp("outputs"), reader_files)
    return reader_files | evaluated_run_stand_ins(run_dir)
