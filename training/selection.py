"""Model selection and early stopping: which epoch's weights a run keeps, and when it stops."""
from __future__ import annotations

import math
from typing import NamedTuple

# selection metric -> +1 when higher is better, -1 when lower is (core.config_models.SELECTION_METRICS)
SELECTION_DIRECTION = {"log_loss": -1.0, "mean_slot_auc_pr": 1.0}


class EpochVerdict(NamedTuple):
    """What one epoch's validation value decides (``epoch_verdict``)."""
    improved: bool       # the new best epoch: its weights are kept
    bad_epochs: int      # epochs in a row without an improvement, this one included
    stop: bool           # bad_epochs reached the patience: train no further


def epoch_verdict(best_value: float | None, bad_epochs: int, value: float, direction: float,
                  patience: int) -> EpochVerdict:
    """Model selection and early stopping after one epoch.

    ``value`` improves on ``best_value`` (None before any finite epoch) when it is strictly
    better in ``direction`` (+1: higher is better, -1: lower is; ``SELECTION_DIRECTION``): a tie
    is no progress. A non-finite value never improves, even as the first: a diverged epoch's
    weights must not become the run's model. Training stops after ``patience`` epochs in a row
    without an improvement.
    """
    improved = math.isfinite(value) and (best_value is None or direction * (value - best_value) > 0)
    bad_epochs = 0 if improved else bad_epochs + 1
    return EpochVerdict(improved, bad_epochs, bad_epochs >= patience)
