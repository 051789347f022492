"""The docstring examples of rnnmem.testing run (and pass) as doctests."""

import doctest
import importlib

import pytest

MODULES = ["rnnmem.testing", "rnnmem.testing.strategies", "rnnmem.testing.assertions",
           "rnnmem.testing.plugin"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, report=True)
    assert res.attempted > 0, f"{name} has no examples"
    assert res.failed == 0
