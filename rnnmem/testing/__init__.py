"""Public testing helpers for users' suites (``pip install rnnmem[testing]``).

* :mod:`rnnmem.testing.strategies`: hypothesis strategies (stable matrices, linear systems,
  torch modules with bounded spectra, input sequences, Heaviside probes);
* :mod:`rnnmem.testing.assertions`: :func:`assert_memory_close`, :func:`assert_decays`,
  :func:`assert_stable_approximation`, with diagnostic messages;
* :mod:`rnnmem.testing.plugin`: the pytest plugin (hypothesis profiles ``dev``/``ci``,
  the ``rnnmem_tolerance`` fixture), registered as the ``pytest11`` entry point ``rnnmem``.

>>> from rnnmem.testing import strategies as rst
>>> from hypothesis import given, settings
>>> @settings(max_examples=5)
... @given(rst.hurwitz_matrices(n=3))
... def test_my_property(W):
...     assert W.shape == (3, 3)
>>> test_my_property()
"""

from . import strategies as strategies
from .assertions import (
    assert_decays as assert_decays,
    assert_memory_close as assert_memory_close,
    assert_stable_approximation as assert_stable_approximation,
)
