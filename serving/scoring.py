"""Batch scoring: calibrated pCTR for candidate rows with a trained, calibrated model.

Candidates are rows in the features-table format (cat_* ids, dense_*, slot_id) of any day: ids
are the persistent vocabulary's, stable across builds, and an id the model has no embedding for
(a value admitted after it was trained) scores as out-of-vocabulary (``training.inference.Scorer``).
The model artifact is broadcast once and ``training.table_scoring.score_table`` scores the selected
rows of one snapshot of the table (its Python tasks read the Delta files themselves, or Spark's
reader feeds them where the files cannot be trusted alone); the down-sampling correction of the
model's training set and the temperatures of its latest calibration run are applied, and the rows
go to ``predictions`` under this run id.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from pyspark.sql import functions as F

from calibration.evaluate import downsampling_shift, latest_temperatures
from calibration.slot_tables import prediction_rows
from core import lineage, tables
from core.feature_table import OLD_LAYOUT_COLUMN, old_layout_error


@dataclass(frozen=True)
class ScoreSummary:
    """What one scoring run read and wrote (the runs row's inputs, outputs and metrics)."""
    model: str
    model_run_id: str
    calibration_run_id: str | None     # the evaluation run whose temperatures were applied
    candidates: str                    # the table scored
    rows: int
    predictions_version: int
    temperatures: dict[str, float]
    model_uri: str | None = None       # set when scored with an MLflow model
    candidates_version: int | None = None   # the Delta version of ``candidates`` scored


def check_model_source(train_run_id: str | None, model_uri: str | None) -> None:
    """A scoring run's model comes from one place: a training run's artifact or an MLflow model
    URI (neither: the latest training run). Both named is refused before anything is read."""
    if model_uri and train_run_id:
        raise ValueError(f"give a model URI ({model_uri}) or a training run id ({train_run_id}), not both")


def candidate_days(window, split: str | None, start: dt.date | None, end: dt.date | None) \
        -> tuple[dt.date | None, dt.date | None]:
    """The event_date bounds of a scoring run: the days of ``split`` of the model's training
    ``window`` (core.training_sets.TrainingWindow; None or '': no bound), narrowed by ``start``
    and ``end`` where given."""
    if not split:
        return start, end
    first, last = window.bounds(split)
    return max(first, start) if start else first, min(last, end) if end else last


def score_run(spark, cfg, run_id: str, train_run_id: str | None = None, candidates: str | None = None,
              split: str | None = "test", start: dt.date | None = None, end: dt.date | None = None,
              model_uri: str | None = None) -> ScoreSummary:
    """Score with a training run's model (``train_run_id``, default the latest) and its latest
    temperatures, or with the MLflow model ``model_uri`` (e.g. ``models:/camoe@champion``: the
    correction and temperatures it was registered with). ``split`` (train, validation, test)
    scores that split's days of the model's own training window (None: any day), within
    [``start``, ``end``] where given."""
    import tempfile
    from pathlib import Path

    from training.artifact import read_artifact

    check_model_source(train_run_id, model_uri)
    if not model_uri:
        train = lineage.find_train_run(spark, cfg, train_run_id)
        artifact = read_artifact(train["artifact"])
        calibration_run, temperatures = latest_temperatures(spark, cfg, train["run_id"])
        return _score(spark, cfg, run_id, Path(train["artifact"]), artifact,
                      downsampling_shift(spark, cfg, artifact), temperatures, train["run_id"], calibration_run,
                      candidates, split, start, end)
    from training.tracking import resolve_model

    with tempfile.TemporaryDirectory(prefix="camoe-model-") as scratch:
        model = resolve_model(cfg, model_uri, Path(scratch))
        summary = _score(spark, cfg, run_id, model.artifact_dir, read_artifact(model.artifact_dir),
                         model.scoring.slot_logit_shift, model.scoring.temperatures, model.scoring.train_run_id,
                         model.scoring.calibration_run_id, candidates, split, start, end)
    return dataclasses.replace(summary, model_uri=model_uri)


def _score(spark, cfg, run_id: str, artifact_dir, artifact, shift, temperatures, train_run_id: str,
           calibration_run_id: str | None, candidates: str | None, split: str | None, start, end) -> ScoreSummary:
    from training.table_scoring import RowSelection, score_table

    name = candidates or artifact.features_table
    if not tables.table_exists(spark, name):
        raise tables.TableNotFound(f"candidates table {name} does not exist")
    table = tables.table_files(spark, name)       # the latest version, as spark.table (not pinned: see table_files)
    if OLD_LAYOUT_COLUMN in table.schema.names:   # ids of a per-window vocabulary: not the model's
        raise ValueError(old_layout_error(name))
    first, last = candidate_days(artifact.window, split, start, end)
    # a uni-modal model serves its own slots
    selection = RowSelection(start=first, end=last, slots=artifact.model_slots)
    rows = selection.where(tables.read_table(spark, name, table.version))
    # refused before anything is written: an empty run would replace the run id's rows with none
    if (first and last and first > last) or rows.isEmpty():
        slots = "" if artifact.model_slots is None else f", slots {list(artifact.model_slots)}"
        of_split = f"split={split} of the model's window, " if split else ""
        raise ValueError(f"no candidate rows in {name} ({of_split}dates {first}..{last}{slots})")
    keep = ["impression_id", "event_date", "slot"] + [c for c in ("label", "true_ctr") if c in rows.columns]
    scored = score_table(spark, table, artifact_dir, shift, temperatures, keep, selection)
    version = tables.replace_run_rows(
        prediction_rows(scored, run_id, artifact.model.name, train_run_id, artifact.features_version),
        cfg.table(tables.PREDICTIONS), run_id)
    written = spark.table(cfg.table(tables.PREDICTIONS)).where(F.col("run_id") == run_id)
    count = written.count()
    return ScoreSummary(model=artifact.model.name, model_run_id=train_run_id, calibration_run_id=calibration_run_id,
                        candidates=name, rows=count, predictions_version=version, temperatures=dict(temperatures),
                        candidates_version=table.version)
