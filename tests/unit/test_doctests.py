"""The examples in docstrings (the model's shapes, the session's settings) run, so they cannot drift
from the code."""
from __future__ import annotations

import doctest

import pytest

import core.session
import training.model


@pytest.mark.parametrize("module", [core.session, training.model], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0, result
