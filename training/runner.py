"""Prepare a training run from the daily feature table and launch it on the chosen back end.

The run chooses its training set (core/training_sets.py): a window of train, validation and
test days ending on ``end_date`` (default: the table's last day), the conf's down-sampling rates
and seed, and the pinned features version. The train days are down-sampled by Spark into
``training_sets`` once (reused when the same set is asked again); validation reads the features
table's own files of its days, never down-sampled."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace
from pathlib import Path

from pyspark.sql import functions as F

from core import tables
from core.config import Config
from core.feature_table import OLD_LAYOUT_COLUMN, TRAIN, VALIDATION, old_layout_error
from core.training_sets import TrainingSetSpec, TrainingWindow
from features.sampling import downsampling_logit_shift
from features.training_sets import ensure_training_set
from training.artifact import ModelArtifact, TrainResult, save_artifact
from training.data import feature_layout, load_snapshot, plan_shards
from training.loop import TrainJob, train_worker, worker_batch_size

log = logging.getLogger(__name__)
WINDOW_DAYS = ("train_days", "validation_days", "test_days")


def prepare(spark, cfg: Config, run_id: str, model_name: str | None = None, grouping: str | None = None,
            features_version: int | None = None, num_proc: int | None = None, backend: str | None = None,
            epochs: int | None = None, output_dir: Path | None = None,
            training_overrides: dict | None = None, save_rank_states: bool = False,
            end_date: dt.date | None = None, window_days: dict | None = None) -> tuple[TrainJob, dict]:
    """The job the workers run and what the artifact records of its data. ``window_days``
    overrides conf ``splits`` (keys ``WINDOW_DAYS``; None values keep the conf's)."""
    table = cfg.table(tables.FEATURES)
    version = features_version if features_version is not None else tables.latest_version(spark, table)
    settings = cfg.model(model_name)
    if grouping:
        cfg.taxonomy.grouping(grouping)            # validates the name
        settings = replace(settings, grouping=grouping)
    training = replace(cfg.training, **(training_overrides or {}))
    num_proc = num_proc or training.num_proc
    worker_batch_size(training.batch_size, num_proc)      # refuse an uneven split before any work
    features = tables.read_table(spark, table, version)
    if OLD_LAYOUT_COLUMN in features.columns:
        raise ValueError(old_layout_error(table))
    tables.check_data_files(spark, table, version)        # a missing or cut file is named, not a worker's trace
    source = f"{table}@{version}"
    window = training_window(cfg, [r[0] for r in features.select("event_date").distinct().collect()], source,
                             end_date, window_days)
    spec = TrainingSetSpec.of(table, version, window, cfg.sampling.rates, cfg.sampling.seed)
    written = ensure_training_set(spark, cfg, spec)
    train = load_snapshot(spark, cfg.table(tables.TRAINING_SETS), written.version, *window.bounds(TRAIN),
                          set_id=spec.set_id)
    validation = load_snapshot(spark, table, version, *window.bounds(VALIDATION))
    train_days = features.where(F.col("event_date").between(*window.bounds(TRAIN)))
    layout = feature_layout(spark, cfg, train_days, f"{source} {window.train_start}..{window.train_end}",
                            settings.slot_features)
    grouping_spec = cfg.taxonomy.grouping(settings.grouping)
    train_slots = None
    if settings.train_modalities:
        train_slots = tuple(i for i, s in enumerate(layout.slots)
                            if cfg.taxonomy.slots[s].modality in settings.train_modalities)
    if training.use_sample_weight:      # the loss already undoes the down-sampling
        shift = (0.0,) * len(layout.slots)
    else:
        by_slot = downsampling_logit_shift(spec.rate_of, layout.slots)
        shift = tuple(by_slot[s] for s in layout.slots)
    job = TrainJob(
        run_id=run_id, model=settings, training=training, layout=layout, tasks=grouping_spec.tasks,
        slot_to_task=tuple(grouping_spec.task_index(s) for s in layout.slots),
        train_plan=plan_shards(train.files, num_proc), validation_files=validation.files,
        output_dir=str(output_dir or (cfg.storage.artifacts_dir / "models" / run_id)),
        backend=backend or training.backend, train_slots=train_slots, slot_logit_shift=shift,
        epochs=epochs, save_rank_states=save_rank_states)
    meta = {"features_table": table, "features_version": version, "training_set": spec.to_json(),
            "training_set_id": spec.set_id, "training_sets_version": written.version,
            "train_rows": train.rows, "validation_rows": validation.rows, "num_proc": num_proc,
            "grouping": settings.grouping}
    return job, meta


def training_window(cfg: Config, days: list[dt.date], source: str, end_date: dt.date | None = None,
                    window_days: dict | None = None) -> TrainingWindow:
    """The window ending on ``end_date`` (default: the last of ``days``, the days ``source``
    holds) with conf ``splits``' day counts, or ``window_days``' where given. Train days before
    the first day held are clipped; a window without a train day held, or with a validation or
    test day not held, is refused naming the days."""
    unknown = sorted(set(window_days or {}) - set(WINDOW_DAYS))
    if unknown:
        raise ValueError(f"window_days: unknown key(s) {unknown}; known: {', '.join(WINDOW_DAYS)}")
    counts = {k: getattr(cfg.splits, k) for k in WINDOW_DAYS}
    counts.update({k: v for k, v in (window_days or {}).items() if v is not None})
    if not days:
        raise ValueError(f"{source} holds no rows: run build_features first")
    held = set(days)
    window = TrainingWindow.ending(end_date or max(held), **counts)
    first = min(held)
    if window.train_end < first:
        raise ValueError(f"{source} holds no train day of the window {window.describe()}: its first day is {first}")
    if window.train_start < first:
        log.info("window %s: train days before %s, the first day of %s, clipped", window.describe(), first, source)
        window = replace(window, train_start=first)
    evaluated = [window.validation_start + dt.timedelta(days=i)
                 for i in range((window.test_end - window.validation_start).days + 1)]
    missing = [d.isoformat() for d in evaluated if d not in held]
    if missing:
        raise ValueError(f"{source} lacks the validation/test day(s) {', '.join(missing)} of the window "
                         f"{window.describe()}: build them, or choose another --end-date")
    return window


def launch(job: TrainJob, num_proc: int, master: str = "local[*]") -> dict | None:
    """Run the workers: in this process (local), under Horovod or under TorchDistributor
    (on the driver or the executors, ``training.torch_distributor_on``; auto by ``master``)."""
    from training.distributed import run_horovod, run_torch_distributor, torch_distributor_on_driver

    if job.backend == "local":
        if num_proc != 1:
            raise ValueError("the local backend runs one process; use horovod or torch_distributor")
        return train_worker(job)
    if job.backend == "horovod":
        return run_horovod(train_worker, (job,), num_proc)
    on_driver = torch_distributor_on_driver(job.training.torch_distributor_on, master)
    result = run_torch_distributor(train_worker, (job,), num_proc, use_gpu=job.training.use_gpu,
                                   local_mode=on_driver)
    if result is not None:
        result["launched_on"] = "driver" if on_driver else "executors"
    return result


def train(spark, cfg: Config, run_id: str, **kwargs) -> tuple[TrainResult, ModelArtifact, Path]:
    """Prepare, launch, save the artifact; returns (result, artifact, artifact folder)."""
    job, meta = prepare(spark, cfg, run_id, **kwargs)
    started = time.time()
    reported = launch(job, meta["num_proc"], spark.sparkContext.master)
    wall_seconds = round(time.time() - started, 2)
    if reported is None:
        raise RuntimeError(f"training run {run_id} stopped before finishing (checkpoint kept in {job.output_dir})")
    best, final = reported.pop("best_state", None), reported.pop("final_state")
    weights = best or final
    result = TrainResult(**{**reported, "history": tuple(reported["history"])})
    artifact = ModelArtifact(
        run_id=job.run_id, model=job.model, training=job.training, layout=job.layout, tasks=job.tasks,
        slot_to_task=job.slot_to_task,
        model_slots=tuple(job.layout.slots[i] for i in job.train_slots) if job.train_slots is not None
        else job.layout.slots,
        downsampling_correction=job.correction,
        slot_logit_shift=dict(zip(job.layout.slots, job.slot_logit_shift or (0.0,) * len(job.layout.slots))),
        result=result, wall_seconds=wall_seconds, **meta)
    return result, artifact, save_artifact(Path(job.output_dir), artifact, weights)
