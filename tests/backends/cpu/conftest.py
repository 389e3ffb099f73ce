"""Compiles in these tests use a private compile cache, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cpu-cache"))
    monkeypatch.delenv("ANYCHIP_NO_CACHE", raising=False)

