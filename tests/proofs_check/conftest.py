"""The claims train into a run store: a fresh one for this test session (never the user's
``~/.cache/rnnmem/runs``); subprocesses inherit it through ``RNNMEM_STORE``."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _session_store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RNNMEM_STORE", str(tmp_path_factory.mktemp("run-store")))
    yield
    mp.undo()
