"""Public testing helpers: hypothesis strategies and assertion helpers for users' suites.

>>> from rnnmem.testing import strategies as rst
>>> from hypothesis import given
>>> @given(rst.hurwitz_matrices(n=3))
... def test_my_property(W): ...
"""

from . import strategies as strategies
