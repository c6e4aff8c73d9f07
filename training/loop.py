"""The training loop every worker runs, its checkpoints and validation scoring (the artifact it
leaves: training/artifact.py).

``training.batch_size`` is the global batch: each of W workers reads its own shard of the
training set (Petastorm, per-epoch seed) in batches of batch_size / W and runs exactly
``plan.steps_per_epoch`` steps. The loss of every step is the loss of the global batch (the
denominators are summed over workers), so 1 and W workers do the same optimisation. A worker
whose shard is exhausted steps on a zero-weight padding batch, in eval mode, so collective
calls stay in lockstep and the padding changes nothing: no gradient, no BatchNorm update,
and no optimizer or scheduler step when no worker has a real example.

After each epoch rank 0 scores the validation split with the down-sampling correction that
evaluation and scoring apply, selects the best epoch and decides early stopping on
``training.selection_metric`` (corrected log loss by default), and checkpoints model +
optimizer + schedule + epoch + the best weights (training/checkpoints.py: atomic, the last two
kept). A restarted run resumes after the last readable checkpoint and ends with the same
weights as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import faults
from training import checkpoints
from training.artifact import CORRECTION_LOGIT_SHIFT, CORRECTION_LOSS_WEIGHT
from training.data import Batch, DataFile, FeatureLayout, ShardPlan, iterate_batches
from training.loss import combine, loss_terms, task_weights
from training.model import FeatureSpec, build_model
from training.selection import SELECTION_DIRECTION, epoch_verdict
from training.validation_scoring import evaluate


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs; pickled to Spark tasks / torchrun processes."""
    run_id: str
    model: Any                        # core.config.ModelSettings
    training: Any                     # core.config.TrainingSettings
    layout: FeatureLayout
    tasks: tuple[str, ...]
    slot_to_task: tuple[int, ...]     # slot index -> task index under the model's grouping
    train_plan: ShardPlan
    validation_files: tuple[DataFile, ...]
    output_dir: str
    backend: str = "local"
    train_slots: tuple[int, ...] | None = None   # uni-modal baselines train (and validate) on some slots only
    slot_logit_shift: tuple[float, ...] | None = None   # per slot id, added to logits (None: zeros)
    epochs: int | None = None                    # overrides training.epochs
    save_rank_states: bool = False               # every rank writes its final weights and optimizer state (tests)
    # the launching job's OMP_NUM_THREADS, read where the job is built: torchrun sets 1 in the
    # workers it starts when none is set, which is its default, not the user's choice
    omp_num_threads: str | None = field(default_factory=lambda: os.environ.get("OMP_NUM_THREADS"))
    extra: dict = field(default_factory=dict)    # recorded with the artifact

    @property
    def correction(self) -> str:
        return CORRECTION_LOSS_WEIGHT if self.training.use_sample_weight else CORRECTION_LOGIT_SHIFT


def worker_batch_size(global_batch: int, workers: int) -> int:
    """Rows per worker per step: the global batch split evenly over the workers."""
    if global_batch % workers:
        raise ValueError(f"training.batch_size {global_batch} is the global batch; it must divide evenly "
                         f"over {workers} workers")
    return global_batch // workers


def _device(comm) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(comm.local_rank)
        return torch.device("cuda", comm.local_rank)
    return torch.device("cpu")


def _lr_lambda(warmup: int, total: int, floor: float):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def new_model(job: TrainJob) -> nn.Module:
    return build_model(job.model, FeatureSpec.of(job.layout), len(job.tasks))


def train_worker(job: TrainJob) -> dict | None:
    """Train on this process's shard; rank 0 returns the run summary, others None."""
    from training.distributed import communicator

    comm = communicator(job.backend)
    try:
        return _train(job, comm)
    finally:
        comm.shutdown()


@dataclass
class StepContext:
    """What ``train_step`` needs besides the batch."""
    model: nn.Module                  # the module itself (its train/eval mode is switched)
    train_model: nn.Module            # what to call (the model, or its DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    comm: Any
    lambdas: torch.Tensor
    alm: bool
    normalization: str
    use_sample_weight: bool = False
    keep_slots: torch.Tensor | None = None
    use_amp: bool = False


def train_step(ctx: StepContext, batch: Batch, padding: bool) -> float | None:
    """One optimisation step on the global batch; returns its loss, or None when no worker had
    a real example (then nothing changed: every worker sees the same summed denominators)."""
    weight = _example_weight(batch, ctx.use_sample_weight, ctx.keep_slots, padding)
    # BatchNorm must not learn statistics of a repeated batch, and has none of a single row (a
    # shard's last batch can hold one): those steps use the running statistics
    frozen_norm = padding or len(batch) < 2
    if frozen_norm:
        ctx.model.eval()
    try:
        device_type = batch.label.device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=ctx.use_amp):
            logits = ctx.train_model(batch.categorical, batch.dense)
    finally:
        if frozen_norm:
            ctx.model.train()
    terms = loss_terms(logits.float(), batch.label, batch.task, ctx.alm, weight)
    denominators = ctx.comm.allreduce_sum(terms.denominators)
    if float(denominators[-1]) <= 0:
        return None
    loss, _ = combine(terms, ctx.lambdas, ctx.normalization, denominators)
    # workers average gradients; each worker's share of the global loss is scaled back up
    ctx.optimizer.zero_grad()
    (loss * ctx.comm.size).backward()
    ctx.optimizer.step()
    ctx.scheduler.step()
    return float(loss.detach())            # this worker's share; the shares sum to the global loss


def threads_per_process(processes: int, cores: int | None, omp_num_threads: str | None) -> int:
    """Torch's intra-op threads for one of ``processes`` training processes on this machine: the
    cores shared out, unless the launching job's OMP_NUM_THREADS says. Set it to 1 where other
    work shares the cores: between small ops the second thread spins, measured at ~70% more CPU
    for ~20% less wall on a 2-core machine (README, test time)."""
    if omp_num_threads and omp_num_threads.strip():
        try:
            wanted = int(omp_num_threads)
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS={omp_num_threads!r} is not a whole number of threads") from None
        if wanted < 1:
            raise ValueError(f"OMP_NUM_THREADS={omp_num_threads!r}: at least 1 thread")
        return wanted
    return max(1, (cores or 1) // max(1, processes))


def _train(job: TrainJob, comm) -> dict | None:
    t = job.training
    device = _device(comm)
    if device.type == "cpu":
        torch.set_num_threads(threads_per_process(comm.size, os.cpu_count(), job.omp_num_threads))
    torch.manual_seed(t.seed)
    model = new_model(job).to(device)
    # Horovod's optimizer is a new one over the same parameters: the schedule, the checkpoint's
    # state and the checkpoints themselves must all be the optimizer that steps
    train_model, optimizer = comm.wrap(model, torch.optim.Adam(model.parameters(), lr=t.learning_rate,
                                                               weight_decay=t.weight_decay))
    epochs = job.epochs or t.epochs
    batch_size = worker_batch_size(t.batch_size, comm.size)
    steps_per_epoch = job.train_plan.steps_per_epoch(batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(min(t.warmup_steps, epochs * steps_per_epoch // 10), epochs * steps_per_epoch,
                              t.min_lr_ratio))     # a short run must not spend itself warming up
    direction = SELECTION_DIRECTION[t.selection_metric]
    state = {"epoch": 0, "best_value": None, "best_epoch": -1, "bad_epochs": 0, "history": []}

    out = Path(job.output_dir)
    best_state = None
    # rank 0 alone chooses (and sets aside unreadable files), so every rank resumes the same epoch;
    # it keeps the checkpoint it read whole, the others read the one it names
    found = checkpoints.latest_readable(out, map_location=device) if comm.rank == 0 else None
    chosen = comm.broadcast_object(None if found is None else str(found[0]))
    if chosen is not None:
        saved = found[1] if found is not None else torch.load(chosen, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state, best_state = saved["state"], saved["best_model"]
    # a fresh optimizer has no state to share (Horovod would take a zero-gradient step to make one)
    comm.broadcast_state(model, optimizer if chosen is not None else None)

    slot_to_task = torch.tensor(job.slot_to_task, dtype=torch.long)
    ctx = StepContext(model, train_model, optimizer, scheduler, comm,
                      task_weights(len(job.tasks), job.model.task_weights).to(device), job.model.alm,
                      job.model.alm_normalization, t.use_sample_weight,
                      torch.tensor(job.train_slots, dtype=torch.long).to(device) if job.train_slots is not None
                      else None, device.type == "cuda" and t.mixed_precision)
    shard = job.train_plan.shards[comm.rank]
    stopped_early = False
    train_seconds, examples = 0.0, 0
    run_started, first_epoch = time.perf_counter(), state["epoch"]

    while state["epoch"] < epochs:
        epoch = state["epoch"]
        torch.manual_seed(t.seed * 1000 + epoch * 10 + comm.rank)
        model.train()
        started = time.perf_counter()
        epoch_examples, loss_sum, real_steps = 0, 0.0, 0
        batches = iterate_batches(shard, job.layout, slot_to_task, batch_size, seed=t.seed + epoch,
                                  workers=t.reader_workers, shuffle_buffer=t.shuffle_buffer)
        last: Batch | None = None
        for step in range(steps_per_epoch):
            faults.during_training(epoch, step, steps_per_epoch, comm.rank)
            batch = next(batches, None)
            padding = batch is None
            batch = last if padding else batch
            if batch is None:
                raise RuntimeError(f"rank {comm.rank} has an empty shard")
            last = batch
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            loss = train_step(ctx, batch, padding)
            if loss is not None:
                real_steps += 1
                loss_sum += loss
            if not padding:
                epoch_examples += len(batch)
        for _ in batches:   # drain: a shard never holds more than steps_per_epoch batches
            raise RuntimeError("shard had more batches than planned")
        summed = comm.allreduce_sum(torch.tensor([loss_sum, epoch_examples], dtype=torch.float64))
        loss_sum, global_examples = float(summed[0]), int(summed[1])
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        examples += epoch_examples

        comm.broadcast_state(model)            # identical parameters and BatchNorm buffers
        decision = None
        if comm.rank == 0:
            metrics = evaluate(model, job.validation_files, job.layout, slot_to_task, job.tasks,
                               batch_size=max(t.batch_size, 8192), device=device,
                               slot_logit_shift=job.slot_logit_shift, slots=job.train_slots)
            value = metrics[t.selection_metric]
            verdict = epoch_verdict(state["best_value"], state["bad_epochs"], value, direction,
                                    t.early_stopping_patience)
            state["bad_epochs"] = verdict.bad_epochs
            if verdict.improved:
                state["best_value"], state["best_epoch"] = value, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state["history"].append({"epoch": epoch, "train_loss": loss_sum / max(1, real_steps),
                                     "train_examples": epoch_examples, "train_seconds": elapsed,
                                     "steps": steps_per_epoch, "lr": scheduler.get_last_lr()[0], **metrics})
            state["epoch"] = epoch + 1
            checkpoints.save(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "state": state, "best_model": best_state},
                             state["epoch"])
            decision = verdict.stop
            print(progress_line(epoch, epochs, global_examples / max(elapsed, 1e-9), state["history"][-1]["train_loss"],
                                t.selection_metric, value, verdict.improved, time.perf_counter() - run_started,
                                epoch + 1 - first_epoch, decision), flush=True)
        state = comm.broadcast_object(state)
        stop = comm.broadcast_object(decision)
        if stop:
            stopped_early = True
            break

    totals = torch.tensor([float(examples), train_seconds])
    if job.save_rank_states:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / f"final_rank{comm.rank}.pt")
        # not broadcast after each epoch as the weights are: equal across ranks only when every
        # rank stepped with the same (averaged) gradients
        torch.save(optimizer.state_dict(), out / f"final_rank{comm.rank}_optimizer.pt")
    if comm.rank != 0:
        return None
    return {"run_id": job.run_id, "history": state["history"], "best_epoch": state["best_epoch"],
            "selection_metric": t.selection_metric, "best_value": state["best_value"],
            "stopped_early": stopped_early, "workers": comm.size, "worker_batch_size": batch_size,
            "global_batch_size": t.batch_size, "steps_per_epoch": steps_per_epoch,
            "backend": comm.name, "examples_per_second_rank0": float(totals[0] / max(totals[1], 1e-9)),
            "train_seconds_rank0": float(totals[1]),
            "final_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "best_state": best_state}


def progress_line(epoch: int, epochs: int, examples_per_second: float, train_loss: float, metric: str,
                  value: float, improved: bool, elapsed: float, epochs_done: int, stopping: bool) -> str:
    """One line per epoch (rank 0): throughput, losses, the selection metric, time used and left.
    The time left assumes every remaining epoch runs (early stopping can only shorten it)."""
    left = 0.0 if stopping else elapsed / max(1, epochs_done) * (epochs - epoch - 1)
    mark = " (best)" if improved else ""
    end = "; stopping early" if stopping and epoch + 1 < epochs else ""
    return (f"epoch {epoch + 1}/{epochs}: {examples_per_second:,.0f} examples/s, train loss {train_loss:.5f}, "
            f"validation {metric} {value:.5f}{mark}, elapsed {_duration(elapsed)}, left ~{_duration(left)}{end}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _example_weight(batch: Batch, use_sample_weight: bool, keep_slots, padding: bool):
    weight = batch.weight if use_sample_weight else None
    if keep_slots is not None:
        keep = torch.isin(batch.slot, keep_slots.to(batch.slot.device)).to(batch.label.dtype)
        weight = keep if weight is None else weight * keep
    if padding:
        weight = torch.zeros_like(batch.label)
    return weight
