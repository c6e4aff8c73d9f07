"""Column-expression helpers shared by the Spark library (one definition each)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

_HASH_RANGE = 2 ** 52


def lookup(key: Column, mapping: Mapping[Any, Any], default: Any = None) -> Column:
    """CASE key WHEN k THEN mapping[k] ... ELSE default END (a literal map as an expression)."""
    expr = None
    for k, v in mapping.items():
        cond = key == F.lit(k)
        expr = F.when(cond, F.lit(v)) if expr is None else expr.when(cond, F.lit(v))
    if expr is None:
        return F.lit(default)
    return expr.otherwise(F.lit(default)) if default is not None else expr


def uniform(seed: int, name: str, *keys: Column) -> Column:
    """A U(0, 1) draw that is a pure function of (seed, name, keys): reruns repeat it."""
    h = F.xxhash64(F.lit(seed), F.lit(name), *keys)
    return (F.pmod(h, F.lit(_HASH_RANGE)).cast("double") + 0.5) / float(_HASH_RANGE)
