"""core/training_sets.py: windows chosen at training time and the training set's id (no JVM)."""
from __future__ import annotations

import datetime as dt

import pytest

from core.training_sets import TrainingSetSpec, TrainingWindow

END = dt.date(2026, 3, 20)
RATES = {("stream_audio", 0): 0.1, ("podcast", 0): 0.3}


def test_a_window_ending_on_a_day_takes_test_then_validation_then_train_days_before_it():
    """Breakage caught: an off-by-one at any boundary (a day in two splits, or in none)."""
    w = TrainingWindow.ending(END, train_days=8, validation_days=2, test_days=3)
    assert (w.test_start, w.test_end) == (dt.date(2026, 3, 18), END)
    assert (w.validation_start, w.validation_end) == (dt.date(2026, 3, 16), dt.date(2026, 3, 17))
    assert (w.train_start, w.train_end) == (dt.date(2026, 3, 8), dt.date(2026, 3, 15))
    days = [dt.date(2026, 3, 7) + dt.timedelta(days=i) for i in range(15)]
    assert [w.split_of(d) for d in days] == [None] + ["train"] * 8 + ["validation"] * 2 + ["test"] * 3 + [None]


def test_a_window_with_an_empty_or_gapped_split_is_refused_naming_it():
    with pytest.raises(ValueError, match="validation_days must be at least 1, got 0"):
        TrainingWindow.ending(END, 8, 0, 1)
    d = dt.date(2026, 3, 1)
    with pytest.raises(ValueError, match="must be consecutive day ranges"):
        TrainingWindow(d, d, d + dt.timedelta(days=2), d + dt.timedelta(days=2), d + dt.timedelta(days=3),
                       d + dt.timedelta(days=3))


def test_the_set_id_is_the_same_for_the_same_spec_and_changes_with_any_part_of_it():
    """Breakage caught: an id that ignores a part of the spec (a reused set of other rows), or
    that depends on the order the rates were given in (the same set assembled twice)."""
    window = TrainingWindow.ending(END, 8, 1, 1)
    spec = TrainingSetSpec.of("camoe.features", 4, window, RATES, 11)
    same = TrainingSetSpec.of("camoe.features", 4, window, dict(reversed(list(RATES.items()))), 11)
    assert spec.set_id == same.set_id and spec.set_id.startswith("ts-") and len(spec.set_id) == 19
    others = [TrainingSetSpec.of("other.features", 4, window, RATES, 11),
              TrainingSetSpec.of("camoe.features", 5, window, RATES, 11),
              TrainingSetSpec.of("camoe.features", 4, TrainingWindow.ending(END, 7, 1, 1), RATES, 11),
              TrainingSetSpec.of("camoe.features", 4, window, {**RATES, ("podcast", 0): 0.31}, 11),
              TrainingSetSpec.of("camoe.features", 4, window, RATES, 12)]
    assert len({spec.set_id, *(o.set_id for o in others)}) == 6
    assert TrainingSetSpec.from_json(spec.to_json()) == spec            # what the artifact records


def test_rates_outside_zero_to_one_are_refused_naming_the_stratum():
    window = TrainingWindow.ending(END, 8, 1, 1)
    with pytest.raises(ValueError, match=r"rate of \(podcast, 0\) is 0.0"):
        TrainingSetSpec.of("camoe.features", 1, window, {("podcast", 0): 0.0}, 11)
    with pytest.raises(ValueError, match=r"rate of \(podcast, 2\)"):
        TrainingSetSpec.of("camoe.features", 1, window, {("podcast", 2): 0.5}, 11)


def test_a_training_window_is_clipped_to_the_days_built_and_refused_naming_missing_evaluation_days():
    """training.runner.training_window: the conf's day counts or the flags', train days before the
    table's first day clipped, a validation or test day the table lacks named."""
    from core.config import load_config
    from training.runner import training_window

    cfg = load_config()                       # splits: 8 train, 1 validation, 1 test
    days = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(20)]
    w = training_window(cfg, days, "camoe.features@3")
    assert (w.train_start, w.validation_start, w.test_end) == (dt.date(2026, 3, 11), dt.date(2026, 3, 19), days[-1])
    w = training_window(cfg, days, "camoe.features@3", END - dt.timedelta(days=12), {"train_days": 30,
                                                                                     "test_days": None})
    assert (w.train_start, w.train_end, w.test_end) == (days[0], dt.date(2026, 3, 6), dt.date(2026, 3, 8))
    with pytest.raises(ValueError, match=r"lacks the validation/test day\(s\) 2026-03-21, 2026-03-22"):
        training_window(cfg, days, "camoe.features@3", dt.date(2026, 3, 22))
    gapped = [d for d in days if d != dt.date(2026, 3, 19)]
    with pytest.raises(ValueError, match="lacks the validation/test day.* 2026-03-19 of the window"):
        training_window(cfg, gapped, "camoe.features@3")
    with pytest.raises(ValueError, match="holds no train day of the window"):
        training_window(cfg, days, "camoe.features@3", dt.date(2026, 3, 2))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['train'\]"):
        training_window(cfg, days, "camoe.features@3", window_days={"train": 3})
    with pytest.raises(ValueError, match="holds no rows"):
        training_window(cfg, [], "camoe.features@3")
