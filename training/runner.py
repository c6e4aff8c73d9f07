"""Prepare a training run from the feature table and launch it on the chosen back end."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from core import tables
from core.config import Config
from features.sampling import build_logit_shift
from training.artifact import ModelArtifact, TrainResult, save_artifact
from training.data import feature_layout, load_snapshot, plan_shards
from training.loop import TrainJob, train_worker, worker_batch_size


def prepare(spark, cfg: Config, run_id: str, model_name: str | None = None, grouping: str | None = None,
            features_version: int | None = None, num_proc: int | None = None, backend: str | None = None,
            epochs: int | None = None, output_dir: Path | None = None,
            training_overrides: dict | None = None,
            save_rank_states: bool = False) -> tuple[TrainJob, dict]:
    table = cfg.table(tables.FEATURES)
    version = features_version if features_version is not None else tables.latest_version(spark, table)
    settings = cfg.model(model_name)
    if grouping:
        cfg.taxonomy.grouping(grouping)            # validates the name
        settings = replace(settings, grouping=grouping)
    training = replace(cfg.training, **(training_overrides or {}))
    num_proc = num_proc or training.num_proc
    worker_batch_size(training.batch_size, num_proc)      # refuse an uneven split before any work
    tables.check_data_files(spark, table, version)        # a missing or cut file is named, not a worker's trace
    train = load_snapshot(spark, table, version, "train")
    validation = load_snapshot(spark, table, version, "validation")
    if validation.build_run_id != train.build_run_id:
        raise ValueError(f"train and validation rows of {table}@{version} come from different builds")
    layout = feature_layout(spark, cfg, train, settings.slot_features)
    grouping_spec = cfg.taxonomy.grouping(settings.grouping)
    train_slots = None
    if settings.train_modalities:
        train_slots = tuple(i for i, s in enumerate(layout.slots)
                            if cfg.taxonomy.slots[s].modality in settings.train_modalities)
    if training.use_sample_weight:      # the loss already undoes the down-sampling
        shift = (0.0,) * len(layout.slots)
    else:
        by_slot = build_logit_shift(spark, cfg.table(tables.SAMPLING_RATES), train.build_run_id, layout.slots)
        shift = tuple(by_slot[s] for s in layout.slots)
    job = TrainJob(
        run_id=run_id, model=settings, training=training, layout=layout, tasks=grouping_spec.tasks,
        slot_to_task=tuple(grouping_spec.task_index(s) for s in layout.slots),
        train_plan=plan_shards(train.files, num_proc), validation_files=validation.files,
        output_dir=str(output_dir or (cfg.storage.artifacts_dir / "models" / run_id)),
        backend=backend or training.backend, train_slots=train_slots, slot_logit_shift=shift,
        epochs=epochs, save_rank_states=save_rank_states)
    meta = {"features_table": table, "features_version": version, "build_run_id": train.build_run_id,
            "train_rows": train.rows, "validation_rows": validation.rows, "num_proc": num_proc,
            "grouping": settings.grouping}
    return job, meta


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
