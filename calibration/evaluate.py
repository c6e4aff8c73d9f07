"""One evaluation run (jobs/calibrate_evaluate.py, the experiments): find the training run, fit
per-task temperatures on the validation days of the model's training window, score its test days
before and after, write the slot-level tables (calibration/slot_tables.py builds them), plot, and
summarise for the runs row; MLflow tracking of the run; the down-sampling shift and temperatures
scoring applies. Both day ranges are read from the daily feature table at the model's pinned
features version (never down-sampled), of the model's slots.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from pyspark.sql import functions as F

from calibration.slot_tables import (
    change_vs_baseline,
    expert_mask_tables,
    prediction_rows,
    slot_tables,
    with_run_columns,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationSummary:
    """What one evaluation run read, fitted and wrote (the runs row's inputs, outputs, metrics)."""
    model: str
    model_run_id: str
    features_version: int
    temperatures: dict[str, float]           # task -> T
    baseline_run_id: str | None
    outputs: dict[str, int]                  # table -> Delta version written
    test_rows: int
    auc_pr: float | None                     # calibrated, all test rows (None: undefined)
    ece_equal_mass_before: float | None
    ece_equal_mass_after: float | None
    segments_without_clicks: tuple[str, ...]
    plots: tuple[str, ...] = ()
    window: str = ""                         # the model's training window (TrainingWindow.describe)

    def metrics(self) -> dict:
        """Everything but the outputs, JSON-ready, for the runs row."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "outputs"}


def evaluate_run(spark, cfg, run_id: str, train_run_id: str | None = None, baseline_run_id: str | None = None,
                 plots_dir=None, expert_masking: bool = True, plots: bool = True) -> EvaluationSummary:
    """Fit temperatures on the model window's validation days, score its test days before/after,
    write every evaluation table, plot. ``expert_masking=False`` skips the masked-expert scores
    (``expert_mask_metrics``, masked_pctr); ``plots=False`` (or ``evaluation.plots: false``) the diagrams."""
    from core import lineage, tables
    from training.artifact import read_artifact

    train = lineage.find_train_run(spark, cfg, train_run_id)
    artifact = read_artifact(train["artifact"])
    snapshot = tables.check_data_files(spark, artifact.features_table, artifact.features_version)
    shift = downsampling_shift(spark, cfg, artifact)
    masking = expert_masking and artifact.model.architecture == "moe" and artifact.model.experts > 1
    temperatures, temperature_rows, masked_temperatures = fit_run_temperatures(
        spark, cfg, snapshot, train["artifact"], artifact, shift, masking)
    baseline_run_id, baseline = _baseline(spark, cfg, artifact.model.name, artifact.features_version,
                                          baseline_run_id)
    ids = dict(run_id=run_id, model=artifact.model.name, model_run_id=train["run_id"],
               features_version=artifact.features_version)
    scored = score_test_split(spark, snapshot, train["artifact"], artifact, shift, temperatures, masking,
                              masked_temperatures)
    try:
        # materialised once here: the tables below are aggregations of it, written concurrently
        if scored.count() == 0:
            raise ValueError(f"{artifact.features_table}@{artifact.features_version} has no rows on the test days "
                             f"of the model's window ({artifact.window.describe()})")
        frames = evaluation_frames(spark, cfg, scored, temperature_rows, ids, baseline, baseline_run_id,
                                   artifact.model.experts if masking else 0,
                                   with_truth="true_ctr" in snapshot.schema.names,
                                   with_ceiling="ceiling_ctr" in snapshot.schema.names)
        versions = tables.replace_run_rows_of_tables({cfg.table(t): df for t, df in frames.items()}, run_id)
    finally:
        scored.unpersist()
    written = spark.table(cfg.table(tables.SLOT_METRICS)).where(F.col("run_id") == run_id).toPandas()
    figures = _plot(spark, cfg, run_id, written, baseline_run_id, plots_dir) if plots and cfg.evaluation.plots else ()
    return _summary(written, ids, temperatures, baseline_run_id, {t: versions[cfg.table(t)] for t in frames},
                    figures, artifact.window.describe())


def fit_run_temperatures(spark, cfg, snapshot, artifact_dir, artifact, shift: dict[str, float],
                         masked_experts: bool = False) -> tuple[dict[str, float], list[tuple], np.ndarray | None]:
    """Per task T minimising the NLL of the corrected logits of the model's slots on the validation
    days of its training window;
    returns (task -> T, the temperatures table's rows, and with ``masked_experts`` a (K, T)
    array: the temperatures of the model with expert k zeroed, fitted the same way on its own
    validation logits, so a masked model is judged calibrated as the model itself is)."""

    from calibration.temperature import fit_temperatures
    from core.feature_table import VALIDATION
    from training.table_scoring import RowSelection, score_table

    tasks = list(artifact.tasks)
    validation = score_table(spark, snapshot, artifact_dir, shift, None, keep=["label"],
                             selection=RowSelection.of_split(artifact.window, VALIDATION, artifact.model_slots),
                             masked_experts=masked_experts)
    validation = validation.select("task", "label", "pctr_raw",
                                   *(["masked_pctr"] if masked_experts else [])).toPandas()
    if validation.empty:
        raise ValueError(f"{artifact.features_table}@{artifact.features_version} has no rows on the validation "
                         f"days of the model's window ({artifact.window.describe()})")
    bounds = (cfg.evaluation.temperature_min, cfg.evaluation.temperature_max)
    z = _logit(validation["pctr_raw"].to_numpy(np.float64))
    y = validation["label"].to_numpy(np.float64)
    task_index = validation["task"].map({t: i for i, t in enumerate(tasks)}).to_numpy(np.int64)
    fitted = fit_temperatures(z, y, task_index, len(tasks), bounds)
    rows = []
    for i, task in enumerate(tasks):
        sel = task_index == i
        before, after = _nll(z[sel], y[sel], 1.0), _nll(z[sel], y[sel], fitted[i])
        rows.append((task, float(fitted[i]), int(sel.sum()), int(y[sel].sum()), before, after))
    masked = None
    if masked_experts:
        raw = np.vstack(validation["masked_pctr"].to_numpy()).astype(np.float64)        # (n, K), T = 1
        masked = np.stack([fit_temperatures(_logit(raw[:, k]), y, task_index, len(tasks), bounds)
                           for k in range(raw.shape[1])])                                # (K, T)
    return {task: float(t) for task, t in zip(tasks, fitted)}, rows, masked


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def score_test_split(spark, snapshot, artifact_dir, artifact, shift, temperatures, masked_experts: bool,
                     masked_temperatures: np.ndarray | None = None):
    """The rows of the model's slots on the test days of its window, scored before and after calibration, persisted (the
    caller unpersists); ``true_ctr`` is a null column on a log without it. With
    ``masked_temperatures`` ((K, T): ``fit_run_temperatures``') each masked score is
    recalibrated with its own expert's temperature instead of the model's."""
    from core.feature_table import TEST
    from training.table_scoring import RowSelection, score_table

    names = snapshot.schema.names
    keep = ["impression_id", "event_date", "slot", "label"] + [c for c in ("true_ctr", "ceiling_ctr")
                                                               if c in names and "true_ctr" in names]
    scored = score_table(spark, snapshot, artifact_dir, shift, temperatures, keep=keep,
                         selection=RowSelection.of_split(artifact.window, TEST, artifact.model_slots),
                         masked_experts=masked_experts)
    if masked_experts and masked_temperatures is not None:
        scored = recalibrate_masked(scored, list(artifact.tasks), temperatures, masked_temperatures)
    if "true_ctr" not in names:
        scored = scored.withColumn("true_ctr", F.lit(None).cast("double"))
    return scored.persist()


def recalibrate_masked(scored, tasks: list[str], temperatures: dict[str, float], masked_temperatures: np.ndarray):
    """masked_pctr[k] = sigmoid(logit(masked_pctr[k]) * T_task / T_k,task): the scores the model's
    temperature calibrated, calibrated with expert k's own (both divide the same corrected logit)."""
    experts = range(masked_temperatures.shape[0])
    factors = F.create_map(*[x for i, task in enumerate(tasks) for x in (
        F.lit(task), F.array(*[F.lit(float(temperatures[task] / masked_temperatures[k, i])) for k in experts]))])
    factor_of_task = factors[F.col("task")]

    def recalibrated(p, k):
        return 1.0 / (1.0 + F.exp(-(F.log(p) - F.log1p(-p)) * F.element_at(factor_of_task, k + 1)))
    return scored.withColumn("masked_pctr", F.transform("masked_pctr", recalibrated))


def evaluation_frames(spark, cfg, scored, temperature_rows, ids: dict, baseline, baseline_run_id: str | None,
                      masked_experts: int, with_truth: bool, with_ceiling: bool) -> dict:
    """table -> the rows this run writes to it, every one an aggregation of ``scored``
    (``masked_experts``: the model's expert count when masked scores were made, else 0)."""
    from core import tables

    bins = cfg.evaluation.ece_bins
    metrics, bin_rows = slot_tables(scored, bins, with_oracle=with_truth, with_ceiling=with_truth and with_ceiling)
    metrics = change_vs_baseline(metrics, baseline, baseline_run_id)
    frames = {
        tables.SLOT_METRICS: with_run_columns(metrics, **ids, first=("level", "slot")),
        tables.CALIBRATION_BINS: with_run_columns(bin_rows, **ids, first=("level", "slot")),
        tables.TEMPERATURES: with_run_columns(spark.createDataFrame(
            temperature_rows, "task string, temperature double, validation_rows long, "
                              "validation_positives long, nll_before double, nll_after double"), **ids),
        tables.PREDICTIONS: prediction_rows(scored, **ids),
    }
    if masked_experts:
        frames[tables.EXPERT_MASK_METRICS] = with_run_columns(
            expert_mask_tables(scored, masked_experts, bins), **ids, first=("level", "slot", "masked_expert"))
    return frames


def _plot(spark, cfg, run_id: str, written, baseline_run_id: str | None, plots_dir) -> tuple[str, ...]:
    """Reliability diagrams (and AUC-PR change vs the baseline) of the run, as PNG paths."""
    from pathlib import Path

    from calibration import plots
    from core import tables

    out = Path(plots_dir or cfg.storage.artifacts_dir / "evaluation" / run_id)
    bin_frame = spark.table(cfg.table(tables.CALIBRATION_BINS)).where(F.col("run_id") == run_id).toPandas()
    figures = [str(plots.reliability_diagrams(bin_frame, out / "reliability.png"))]
    if baseline_run_id:
        figures.append(str(plots.auc_pr_change_bars(written, out / "auc_pr_vs_baseline.png",
                                                    f"{cfg.evaluation.baseline_model} ({baseline_run_id})")))
    return tuple(figures)


def _summary(written, ids: dict, temperatures, baseline_run_id, outputs, plots, window: str = "") -> EvaluationSummary:
    """The run's summary from the slot_metrics rows it wrote; segments whose metrics are undefined
    are logged with the reason."""
    overall = written[(written["level"] == "all")].set_index("calibrated")
    undefined = written[written["calibrated"] & written["note"].notna() & (written["level"] != "all")]
    for row in undefined.itertuples():
        log.warning("%s %s (%d test impressions, %d clicks): %s", row.level, row.slot, row.rows, row.positives,
                    row.note)
    return EvaluationSummary(
        model=ids["model"], model_run_id=ids["model_run_id"], features_version=int(ids["features_version"]),
        temperatures=temperatures, baseline_run_id=baseline_run_id, outputs=outputs,
        test_rows=int(overall.loc[True, "rows"]), auc_pr=_finite(overall.loc[True, "auc_pr"]),
        ece_equal_mass_before=_finite(overall.loc[False, "ece_equal_mass"]),
        ece_equal_mass_after=_finite(overall.loc[True, "ece_equal_mass"]),
        segments_without_clicks=tuple(sorted(undefined.loc[undefined["positives"] == 0, "slot"])), plots=plots,
        window=window)


def track_evaluation(spark, cfg, run_id: str, summary: EvaluationSummary):
    """Log evaluation ``run_id`` (``summary``: evaluate_run's) into its training run's MLflow run
    and register the calibrated model (training.tracking.log_evaluation); None when tracking is off."""
    from pathlib import Path

    from core import lineage, tables
    from training.artifact import read_artifact
    from training.tracking import log_evaluation

    train = lineage.find_train_run(spark, cfg, summary.model_run_id)
    artifact = read_artifact(train["artifact"])
    rows = [r.asDict() for r in spark.table(cfg.table(tables.SLOT_METRICS)).where(F.col("run_id") == run_id).collect()]
    return log_evaluation(cfg, run_id, train["run_id"], train["mlflow_run_id"], Path(train["artifact"]), artifact,
                          downsampling_shift(spark, cfg, artifact), summary.temperatures, rows, summary.plots)


def downsampling_shift(spark, cfg, artifact) -> dict[str, float]:
    """Per slot, the logit shift undoing the down-sampling of the model's training set, as its
    artifact records it (from the set's rates; zero for a loss-weighted model): no table is read.
    ``spark`` and ``cfg`` are kept for the callers' one signature."""
    return dict(artifact.logit_shift())


def latest_temperatures(spark, cfg, model_run_id: str) -> tuple[str, dict[str, float]]:
    """(evaluation run id, task -> T) of the latest calibration of a training run."""
    from core import tables

    name = cfg.table(tables.TEMPERATURES)
    rows = [] if not tables.table_exists(spark, name) else \
        spark.table(name).where(F.col("model_run_id") == model_run_id).orderBy(F.col("evaluated_at").desc()).collect()
    if not rows:
        raise LookupError(f"training run {model_run_id} has no temperatures in {name}; "
                          "run jobs/calibrate_evaluate.py for it first")
    run = rows[0].run_id
    return run, {r.task: float(r.temperature) for r in rows if r.run_id == run}


def _baseline(spark, cfg, model_name: str, version: int, baseline_run_id: str | None):
    from core import tables

    name = cfg.table(tables.SLOT_METRICS)
    if not tables.table_exists(spark, name):
        if baseline_run_id:
            raise ValueError(f"baseline run {baseline_run_id}: {name} does not exist yet")
        return None, None
    metrics = spark.table(name)
    if baseline_run_id is None:
        if model_name == cfg.evaluation.baseline_model:
            return None, None
        latest = (metrics.where((F.col("model") == cfg.evaluation.baseline_model)
                                & (F.col("features_version") == version))
                  .orderBy(F.col("evaluated_at").desc()).select("run_id").limit(1).collect())
        if not latest:
            return None, None
        baseline_run_id = latest[0].run_id
    rows = metrics.where(F.col("run_id") == baseline_run_id)
    if rows.limit(1).count() == 0:
        raise ValueError(f"baseline run {baseline_run_id} has no rows in {name}")
    return baseline_run_id, rows


def _nll(z, y, temperature: float) -> float:

    s = z / temperature
    return float(np.mean(np.logaddexp(0.0, s) - y * s)) if len(z) else float("nan")


def _finite(v) -> float | None:
    v = float(v)
    return v if v == v else None
