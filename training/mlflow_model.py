"""A trained CAMoE (or baseline) artifact as an MLflow pyfunc: feature-table rows in, pCTR out.

The pyfunc holds the project's artifact folder (model.pt + model.json, as jobs/train.py wrote it)
and ``scoring.json``: the per-slot logit shift that undoes the training set's down-sampling and
the per-task temperatures of one calibration run (all ones for the uncalibrated model a training
run logs). ``predict`` runs the same ``training.inference.Scorer`` as jobs/score.py and
calibrate_evaluate, so ``mlflow.pyfunc.spark_udf`` and the project's own batch path give the same
pCTR (tests/test_mlflow.py).

Input: the model's feature-table columns (``cat_*`` int, ``dense_*`` float, ``slot_id`` int), one
row per impression. Output: ``pctr`` (double), NaN for a slot the model does not serve (a
uni-modal model serves its own modality's slots only). The model standardises its dense inputs
itself (statistics in its weights) and scores an id newer than its vocabulary as OOV, so no side
table is read. Loading needs this package importable (it is wherever the jobs run: the checkout,
or the wheel/zip spark-submit ships).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

MODEL_ARTIFACT = "camoe_model"       # the pyfunc's artifact key of the model folder
SCORING_ARTIFACT = "scoring"         # ... and of scoring.json
SCORING_FILE = "scoring.json"


@dataclass(frozen=True)
class Scoring:
    """What turns the model's logits into served pCTR, besides the weights."""
    slot_logit_shift: Mapping[str, float]     # slot -> log(r_neg / r_pos) of the training set's rates
    temperatures: Mapping[str, float]         # task -> T (ones: uncalibrated)
    train_run_id: str
    calibration_run_id: str | None = None     # the calibrate_evaluate run the temperatures come from

    def to_json(self) -> str:
        return json.dumps({"slot_logit_shift": dict(self.slot_logit_shift), "temperatures": dict(self.temperatures),
                           "train_run_id": self.train_run_id, "calibration_run_id": self.calibration_run_id},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scoring:
        raw = json.loads(text)
        return cls({k: float(v) for k, v in raw["slot_logit_shift"].items()},
                   {k: float(v) for k, v in raw["temperatures"].items()},
                   raw["train_run_id"], raw.get("calibration_run_id"))


def input_columns(artifact) -> list[tuple[str, str]]:
    """(column, MLflow type) the model reads (``ModelArtifact.input_columns``), in the feature table's types."""
    dense = set(artifact.layout.dense)
    return [(c, "float" if c in dense else "integer") for c in artifact.input_columns]


def signature(artifact):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(kind, name) for name, kind in input_columns(artifact)]),
                          outputs=Schema([ColSpec("double", "pctr")]))


class CamoePyfunc(mlflow.pyfunc.PythonModel):
    """See the module docstring; built in ``load_context`` from the logged artifacts."""

    def load_context(self, context) -> None:
        from training.artifact import load_artifact
        from training.inference import Scorer

        model, artifact = load_artifact(context.artifacts[MODEL_ARTIFACT])
        scoring = Scoring.from_json(Path(context.artifacts[SCORING_ARTIFACT]).read_text())
        slots = artifact.layout.slots
        self._scorer = Scorer.build(model, artifact, [scoring.slot_logit_shift[s] for s in slots],
                                    [scoring.temperatures[t] for t in artifact.tasks])
        self._served = np.array([s in set(artifact.model_slots) for s in slots])
        self._columns = artifact.input_columns

    # pd.DataFrame: MLflow checks inputs against the logged signature, not a schema of the hint
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in self._columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the model reads columns {missing}, which the input lacks")
        slot = frame["slot_id"].to_numpy(np.int64)
        if len(slot) and (slot.min() < 0 or slot.max() >= len(self._served)):
            bad = int(np.flatnonzero((slot < 0) | (slot >= len(self._served)))[0])
            raise ValueError(f"row {bad}: slot_id {slot[bad]} is not one of the model's "
                             f"{len(self._served)} slots (0..{len(self._served) - 1})")
        pctr = self._scorer.score(slot, lambda c, dtype: frame[c].to_numpy(dtype), len(frame))["pctr"]
        return pd.DataFrame({"pctr": np.where(self._served[slot], pctr, np.nan)}, index=frame.index)
