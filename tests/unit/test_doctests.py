"""The shape examples in the model's docstrings run, so they cannot drift from the code."""
from __future__ import annotations

import doctest

import pytest

import training.model


@pytest.mark.parametrize("module", [training.model], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0, result
