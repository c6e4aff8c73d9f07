"""Batch inference inside Spark: a trained artifact scores feature rows through mapInPandas.

The model's weights and description are broadcast once; every Python worker builds the model
once per broadcast (cached by broadcast id) and scores Arrow batches of rows as tensors. Output
per row: the own-task logit, the down-sampling-corrected probability ``pctr_raw`` and, given
temperatures, the calibrated ``pctr``. The same code scores the validation and test splits for
evaluation and candidate tables for production scoring, so what is evaluated is what is served.
"""
from __future__ import annotations

import hashlib
import io
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from training.data import FeatureLayout

_MODELS: dict[str, tuple] = {}          # payload sha256 -> (model, description), per Python worker

SCORE_COLUMNS = ("task", "logit", "pctr_raw", "pctr")


def artifact_payload(artifact_dir) -> bytes:
    """model.pt + model.json of an artifact as one broadcastable blob."""
    from training.loop import load_artifact

    model, description = load_artifact(artifact_dir)
    buffer = io.BytesIO()
    torch.save({"state": model.state_dict(), "description": description}, buffer)
    return buffer.getvalue()


def _model(payload, key: str) -> tuple:
    """The broadcast model, built once per Python worker (workers are reused across tasks)."""
    if key not in _MODELS:
        from training.loop import model_from_state

        blob = torch.load(io.BytesIO(payload.value), weights_only=False)
        torch.set_num_threads(1)          # one Python worker per core already
        _MODELS[key] = (model_from_state(blob["description"], blob["state"]), blob["description"])
    return _MODELS[key]


def score_rows(frame, model, description: Mapping, slot_shift: Sequence[float],
               temperatures: Sequence[float] | None, masked_experts: bool = False) -> dict[str, np.ndarray]:
    """Score one pandas batch of feature rows.

    frame: cat_* int ids, dense_* floats, slot_id. slot_shift: per slot id, log(r_neg / r_pos).
    temperatures: per task index. Returns task, logit, pctr_raw, pctr (and with
    ``masked_experts`` a (N, K) ``masked_pctr``: the calibrated pCTR with expert k zeroed).
    """
    layout = FeatureLayout.from_dict(description["layout"])
    slot = frame["slot_id"].to_numpy(np.int64)
    categorical = torch.from_numpy(layout.categorical_inputs([frame[c].to_numpy(np.int64)
                                                              for c in layout.categorical], slot))
    dense = (torch.from_numpy(np.stack([frame[c].to_numpy(np.float32) for c in layout.dense], 1))
             if layout.dense else torch.zeros(len(frame), 0))
    task = np.asarray(description["slot_to_task"], dtype=np.int64)[slot]
    rows = np.arange(len(frame))
    with torch.no_grad():
        logit = model(categorical, dense).double().numpy()[rows, task]
        corrected = logit + np.asarray(slot_shift, dtype=np.float64)[slot]
        temps = np.ones(len(description["tasks"])) if temperatures is None else np.asarray(temperatures)
        out = {"task": np.asarray(description["tasks"], dtype=object)[task], "logit": logit,
               "pctr_raw": _sigmoid(corrected), "pctr": _sigmoid(corrected / temps[task])}
        if masked_experts:
            experts = model.num_experts
            masked = []
            for k in range(experts):
                mask = torch.ones(experts, dtype=torch.bool)
                mask[k] = False
                z = model(categorical, dense, expert_mask=mask).double().numpy()[rows, task]
                masked.append(_sigmoid((z + np.asarray(slot_shift, dtype=np.float64)[slot]) / temps[task]))
            out["masked_pctr"] = np.stack(masked, 1) if masked else np.zeros((len(frame), 0))
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def score_dataframe(df, artifact_dir, slot_shift: Mapping[str, float], temperatures: Mapping[str, float] | None,
                    keep: Sequence[str], masked_experts: bool = False, rows_per_batch: int = 8192):
    """``df``'s ``keep`` columns plus task, logit, pctr_raw, pctr (+ masked_pctr array).

    slot_shift: slot name -> log(r_neg / r_pos); temperatures: task name -> T (None: T = 1).
    """
    from pyspark.sql import types as T

    from training.loop import load_artifact

    spark = df.sparkSession
    _, description = load_artifact(artifact_dir)
    slots = description["layout"]["slots"]
    missing = [s for s in slots if s not in slot_shift]
    if missing:
        raise ValueError(f"no down-sampling rate for slot(s) {missing}")
    shift = [float(slot_shift[s]) for s in slots]
    temps = None
    if temperatures is not None:
        absent = [t for t in description["tasks"] if t not in temperatures]
        if absent:
            raise ValueError(f"no temperature for task(s) {absent} of model run {description['run_id']}")
        temps = [float(temperatures[t]) for t in description["tasks"]]
    needed = [*description["layout"]["categorical"], *description["layout"]["dense"], "slot_id"]
    absent_columns = [c for c in needed if c not in df.columns]
    if absent_columns:
        raise ValueError(f"rows to score lack feature column(s) {absent_columns}")
    blob = artifact_payload(artifact_dir)
    key = hashlib.sha256(blob).hexdigest()    # content, not object identity: ids are reused
    payload = spark.sparkContext.broadcast(blob)
    fields = [df.schema[c] for c in keep] + [
        T.StructField("task", T.StringType()), T.StructField("logit", T.DoubleType()),
        T.StructField("pctr_raw", T.DoubleType()), T.StructField("pctr", T.DoubleType())]
    if masked_experts:
        fields.append(T.StructField("masked_pctr", T.ArrayType(T.DoubleType())))
    keep = list(keep)

    def predict(batches: Iterator) -> Iterator:
        model, desc = _model(payload, key)
        for frame in batches:
            for start in range(0, len(frame), rows_per_batch):
                part = frame.iloc[start:start + rows_per_batch]
                scored = score_rows(part, model, desc, shift, temps, masked_experts)
                out = part[keep].reset_index(drop=True)
                for name in SCORE_COLUMNS:
                    out[name] = scored[name]
                if masked_experts:
                    out["masked_pctr"] = list(scored["masked_pctr"])
                yield out

    return df.select(*dict.fromkeys([*keep, *needed])).mapInPandas(predict, T.StructType(fields))
