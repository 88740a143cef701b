"""glibc's malloc settings at the start of a run, and the environment's precedence."""

from __future__ import annotations

import sys

import pytest

from dpo_exp.runtime import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_malloc_keeps_freed_memory_unless_the_environment_sets_glibc_tunables(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_memory() is True
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7")
    assert keep_freed_memory() is False
