"""Small protocols for the experiment tests (seconds each on 2 cores)."""

import pytest

from exp_helpers import tiny_run
from rnnmem.experiments import Protocol


@pytest.fixture
def tiny_protocol() -> Protocol:
    """Two seeds of :func:`tiny_run` (a quick budget with three)."""
    return Protocol("tiny", tiny_run(), grid={"seed": [0, 1]},
                    budgets={"smoke": {}, "quick": {"set": {"train.steps": 12},
                                                    "grid": {"seed": [0, 1, 2]}}},
                    default_budget="smoke")


@pytest.fixture
def store(tmp_path):
    from rnnmem.experiments import RunStore

    return RunStore(tmp_path / "store")
