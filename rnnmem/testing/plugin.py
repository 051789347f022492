"""pytest plugin of rnnmem (entry point ``pytest11: rnnmem``), for users' suites.

* registers the hypothesis profiles ``dev`` (random, no deadline, 25 examples) and ``ci``
  (derandomised, no deadline, 25 examples, the failing blob printed) -- select one with
  hypothesis' ``--hypothesis-profile ci`` or ``HYPOTHESIS_PROFILE``; a profile of the same
  name registered later (e.g. in your conftest) wins;
* provides the fixture ``rnnmem_tolerance``: :func:`rnnmem.numerics.tolerance` with the
  dtype defaulting to torch's default dtype (float64 under a float64 suite).

Enable it without installing: ``pytest -p rnnmem.testing.plugin``.

>>> from rnnmem.testing.plugin import PROFILES, register_profiles
>>> sorted(PROFILES)
['ci', 'dev']
>>> register_profiles()
True
"""

from __future__ import annotations

import os

import pytest

PROFILES = {
    "dev": dict(deadline=None, max_examples=25),
    "ci": dict(deadline=None, derandomize=True, max_examples=25, print_blob=True),
}


def register_profiles() -> bool:
    """Register :data:`PROFILES` with hypothesis (False when hypothesis is missing)."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the plugin must not break pytest without rnnmem[testing]
        return False
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    for name, kw in PROFILES.items():
        settings.register_profile(name, suppress_health_check=quiet, **kw)
    return True


def pytest_configure(config):
    register_profiles()


def _default_dtype() -> str:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "float64"
    return str(torch.get_default_dtype()).replace("torch.", "")


@pytest.fixture
def rnnmem_tolerance():
    """``rnnmem_tolerance(dtype=None, *, n_ops=1, cond=1.0, scale=1.0, ...)`` ->
    :class:`rnnmem.numerics.Tolerance` (dtype default: torch's default dtype)."""
    from ..numerics import tolerance

    def make(dtype=None, **kwargs):
        return tolerance(dtype or os.environ.get("RNNMEM_TEST_DTYPE") or _default_dtype(),
                         **kwargs)

    return make
