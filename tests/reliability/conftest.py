"""Shared fixtures of the reliability suite: one trained run and damaged checkpoints."""

import pytest


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    from campaign import make_fixtures

    return make_fixtures(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every case in its own temporary directory: a drawn relative path (``--out é``)
    is written there, never into the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def small_memory_cap(monkeypatch):
    """A documented cap (RNNMEM_MAX_BYTES = 256 MiB) so that no fuzzed size can allocate
    much: anything larger is refused by its estimate before allocating."""
    monkeypatch.setenv("RNNMEM_MAX_BYTES", str(256 * 2**20))
