"""Fixtures of the README's tests: real files where the README names the reader's own."""

from __future__ import annotations

import pytest

from tests.e2e.readme import reader_stand_ins


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory, tiny_model_dir, hh_fixture_repo) -> dict[str, str]:
    """Each placeholder of the README's commands and the real path that stands in for it."""
    return reader_stand_ins(tmp_path_factory.mktemp("reader"), tiny_model_dir, hh_fixture_repo)
