"""The down-sampling correction's two forms agree on Spark columns (the numpy ones: tests/unit/test_calibration.py)."""
from __future__ import annotations

import math

import pytest

from calibration.temperature import downsampling_logit_shift


def test_logit_shift_equals_the_probability_form_of_the_correction(spark):
    from pyspark.sql import functions as F

    from features.sampling import correct_for_downsampling

    shift = downsampling_logit_shift({("a", 0): 0.25, ("a", 1): 1.0}, ("a",))["a"]
    p = 0.03
    row = spark.range(1).select(correct_for_downsampling(F.lit(p), F.lit(0.25)).alias("q")).first()
    assert row.q == pytest.approx(1 / (1 + math.exp(-(math.log(p / (1 - p)) + shift))))


