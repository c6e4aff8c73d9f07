"""A training set's definition, chosen at training time from the daily feature table: which days
train, validate and test, the per-(slot, label) down-sampling rates of the train days, and the
pinned features version. Its id is a hash of all of it, so asking for the same window, rates
and version again names the same set (features/training_sets.py assembles it; the model
artifact records the spec, so the set can be rebuilt exactly)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from core.feature_table import TEST, TRAIN, VALIDATION


@dataclass(frozen=True)
class TrainingWindow:
    """Consecutive day ranges, each inclusive: train, then validation, then test. A split
    never mixes time."""
    train_start: dt.date
    train_end: dt.date
    validation_start: dt.date
    validation_end: dt.date
    test_start: dt.date
    test_end: dt.date

    def __post_init__(self):
        one = dt.timedelta(days=1)
        if not (self.train_start <= self.train_end and self.validation_start <= self.validation_end
                and self.test_start <= self.test_end):
            raise ValueError(f"{self.describe()}: every split needs at least one day")
        if self.validation_start != self.train_end + one or self.test_start != self.validation_end + one:
            raise ValueError(f"{self.describe()}: train, validation and test must be consecutive day ranges")

    @classmethod
    def ending(cls, end: dt.date, train_days: int, validation_days: int, test_days: int) -> TrainingWindow:
        """The window whose last test day is ``end``: ``test_days`` of test, the
        ``validation_days`` before them, and the ``train_days`` before those."""
        for name, days in (("train_days", train_days), ("validation_days", validation_days),
                           ("test_days", test_days)):
            if days < 1:
                raise ValueError(f"{name} must be at least 1, got {days}")
        test_start = end - dt.timedelta(days=test_days - 1)
        validation_end = test_start - dt.timedelta(days=1)
        validation_start = validation_end - dt.timedelta(days=validation_days - 1)
        train_end = validation_start - dt.timedelta(days=1)
        return cls(train_end - dt.timedelta(days=train_days - 1), train_end, validation_start, validation_end,
                   test_start, end)

    def bounds(self, split: str) -> tuple[dt.date, dt.date]:
        return {TRAIN: (self.train_start, self.train_end), VALIDATION: (self.validation_start, self.validation_end),
                TEST: (self.test_start, self.test_end)}[split]

    def split_of(self, day: dt.date) -> str | None:
        for split in (TRAIN, VALIDATION, TEST):
            first, last = self.bounds(split)
            if first <= day <= last:
                return split
        return None

    def describe(self) -> str:
        return (f"train {self.train_start}..{self.train_end}, validation {self.validation_start}.."
                f"{self.validation_end}, test {self.test_start}..{self.test_end}")


@dataclass(frozen=True)
class TrainingSetSpec:
    """Everything that decides a training set's rows. ``rates``: (slot, label) -> keep
    probability of the train days' rows (a stratum not named keeps every row); validation and
    test days are never down-sampled. ``seed`` draws the per-impression uniform behind it."""
    features_table: str
    features_version: int
    window: TrainingWindow
    rates: tuple[tuple[tuple[str, int], float], ...]
    seed: int

    @classmethod
    def of(cls, features_table: str, features_version: int, window: TrainingWindow,
           rates: Mapping[tuple[str, int], float], seed: int) -> TrainingSetSpec:
        for (slot, label), rate in rates.items():
            if not 0.0 < rate <= 1.0 or label not in (0, 1):
                raise ValueError(f"down-sampling rate of ({slot}, {label}) is {rate}: rates are in (0, 1], "
                                 "labels 0 or 1")
        return cls(features_table, int(features_version), window,
                   tuple(sorted(((str(s), int(label)), float(r)) for (s, label), r in rates.items())), int(seed))

    @property
    def rate_of(self) -> dict[tuple[str, int], float]:
        return dict(self.rates)

    def to_json(self) -> dict:
        w = self.window
        return {"features_table": self.features_table, "features_version": self.features_version,
                "window": {k: getattr(w, k).isoformat() for k in TrainingWindow.__dataclass_fields__},
                "rates": [[slot, label, rate] for (slot, label), rate in self.rates], "seed": self.seed}

    @classmethod
    def from_json(cls, data: Mapping) -> TrainingSetSpec:
        window = TrainingWindow(**{k: dt.date.fromisoformat(v) for k, v in data["window"].items()})
        return cls.of(data["features_table"], data["features_version"], window,
                      {(slot, label): rate for slot, label, rate in data["rates"]}, data["seed"])

    @property
    def set_id(self) -> str:
        """``ts-`` and 16 hex digits of the spec's canonical JSON: equal specs, equal ids."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "ts-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
