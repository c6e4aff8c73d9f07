"""The training step and model selection without Spark: padding, global batches, slot inputs,
the down-sampling correction a model records, the corrected selection metric, early stopping
and the best epoch's weights (a few real epochs on tiny Parquet files, one process)."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.config import load_config
from core.config_models import SELECTION_METRICS
from core.metrics import average_precision
from training import checkpoints
from training import loop as training_loop
from training.data import Batch, DataFile, FeatureLayout, ShardPlan
from training.distributed import Communicator
from training.loop import StepContext, TrainJob, threads_per_process, train_step, train_worker, worker_batch_size
from training.loss import task_weights
from training.model import FeatureSpec, MultiTaskMoE, WideAndDeep
from training.selection import SELECTION_DIRECTION, epoch_verdict
from training.validation_scoring import validation_metrics

SPEC = FeatureSpec(cardinalities=(11, 7, 8), num_dense=3)       # last input: the slot (7 slots + OOV)


def make_batch(n=32, seed=0, slot=None):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in SPEC.cardinalities], 1)
    slot_ids = torch.randint(0, 7, (n,), generator=g) if slot is None else torch.full((n,), slot)
    cat[:, 2] = slot_ids + 1
    label = (torch.rand(n, generator=g) < 0.3).float()
    return Batch(cat, torch.randn(n, SPEC.num_dense, generator=g), label, slot_ids, (slot_ids >= 4).long(),
                 torch.ones(n))


def context(model, keep_slots=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return StepContext(model, model, optimizer, scheduler, Communicator(), task_weights(2), True, "paper",
                       keep_slots=keep_slots)


def snapshot(ctx):
    return (copy.deepcopy(ctx.model.state_dict()), copy.deepcopy(ctx.optimizer.state_dict()),
            ctx.scheduler.last_epoch)


def assert_unchanged(before, ctx):
    state, opt, step = before
    for name, tensor in ctx.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name            # BatchNorm running stats included
    assert ctx.optimizer.state_dict()["state"] == opt["state"] == {}
    assert ctx.scheduler.last_epoch == step


def test_a_padding_step_changes_nothing():
    torch.manual_seed(0)
    ctx = context(MultiTaskMoE(SPEC, tasks=2))
    before = snapshot(ctx)
    assert train_step(ctx, make_batch(), padding=True) is None
    assert_unchanged(before, ctx)
    assert ctx.model.training                                     # back in train mode afterwards
    # a real step does change weights, BatchNorm statistics, optimizer and schedule
    assert train_step(ctx, make_batch(), padding=False) > 0
    assert not torch.equal(ctx.model.bottom.dense_norm.running_mean, before[0]["bottom.dense_norm.running_mean"])
    assert ctx.scheduler.last_epoch == before[2] + 1


def test_a_single_row_batch_steps_with_the_running_batchnorm_statistics():
    """A shard's last batch can hold one row (2 Horovod workers hit it): BatchNorm has no batch
    statistics of one row, so the step uses the running ones and learns from the row."""
    torch.manual_seed(2)
    ctx = context(MultiTaskMoE(SPEC, tasks=2))
    before = snapshot(ctx)
    assert train_step(ctx, make_batch(n=1, seed=3), padding=False) > 0
    assert ctx.model.training
    assert torch.equal(ctx.model.bottom.dense_norm.running_mean, before[0]["bottom.dense_norm.running_mean"])
    assert not torch.equal(ctx.model.state_dict()["towers.layers.0.weight"], before[0]["towers.layers.0.weight"])


def test_a_step_without_any_example_of_the_models_slots_changes_no_weight():
    """A uni-modal model's batch of the other modality only: no optimizer or scheduler step."""
    torch.manual_seed(1)
    ctx = context(MultiTaskMoE(SPEC, tasks=2), keep_slots=torch.tensor([4, 5, 6]))
    params = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    assert train_step(ctx, make_batch(slot=0), padding=False) is None
    assert all(torch.equal(p, params[n]) for n, p in ctx.model.named_parameters())
    assert ctx.scheduler.last_epoch == 0


def test_the_batch_size_is_global_and_split_over_workers():
    assert worker_batch_size(512, 1) == 512 and worker_batch_size(512, 2) == 256
    with pytest.raises(ValueError, match="global batch; it must divide evenly over 3 workers"):
        worker_batch_size(512, 3)


def test_each_process_gets_its_share_of_the_cores_unless_omp_num_threads_says():
    assert [threads_per_process(n, 8, None) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert threads_per_process(1, None, "") == 1
    assert threads_per_process(2, 8, "1") == 1 and threads_per_process(1, 2, " 3 ") == 3
    for bad in ("two", "0", "-1"):
        with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
            threads_per_process(1, 2, bad)


def test_the_slot_reaches_every_model_as_an_input():
    cfg = load_config()
    taxonomy = cfg.taxonomy
    assert taxonomy.input_ids("slot") == (1, 2, 3, 4, 5, 6, 7)
    assert taxonomy.input_ids("modality") == (1, 1, 1, 1, 2, 2, 2)
    layout = FeatureLayout(("cat_a",), (), (5, 8, 3), taxonomy.slot_names, ("slot", "modality"),
                           (taxonomy.input_ids("slot"), taxonomy.input_ids("modality")))
    inputs = layout.categorical_inputs([np.array([3, 3, 0])], np.array([0, 4, 6]))
    assert inputs.tolist() == [[3, 1, 1], [3, 5, 2], [0, 7, 2]]
    # an id admitted to the vocabulary after the model was trained (>= its 5 rows) is OOV, 0
    newer = layout.categorical_inputs([np.array([4, 5, 900, -1])], np.array([0, 0, 0, 0]))
    assert newer[:, 0].tolist() == [4, 0, 0, 0]
    assert layout.input_names == ("cat_a", "slot_input_slot", "slot_input_modality")
    # same features, another slot: single-task models answer differently
    torch.manual_seed(2)
    for model in (WideAndDeep(SPEC), MultiTaskMoE(SPEC, tasks=1)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        model.eval()
        audio = make_batch(4, slot=0)
        video = audio.categorical.clone()
        video[:, 2] = 5                                        # stream_video; every other input equal
        with torch.no_grad():
            assert not torch.allclose(model(audio.categorical, audio.dense), model(video, audio.dense))


def test_selection_metrics_are_computed_on_corrected_scores():
    """Uncorrected logits of a down-sampled slot are inflated by -log(r_neg); pooled across
    slots that reorders rows. The selection metrics undo it first, as evaluation does."""
    rng = np.random.default_rng(0)
    slot = rng.integers(0, 2, 4000)
    true_logit = rng.normal(-3, 1, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    shift = np.array([math.log(0.1), 0.0])                     # slot 0 kept 10% of its negatives
    raw = true_logit - shift[slot]                             # what a model trained on the sample outputs
    m = validation_metrics(raw, y, slot, slot, ("a", "b"), shift)
    z = true_logit
    assert m["log_loss"] == pytest.approx(np.mean(np.logaddexp(0, z) - y * z))
    assert m["auc_pr"] == pytest.approx(average_precision(y, z))
    assert m["mean_slot_auc_pr"] == pytest.approx(np.mean([average_precision(y[slot == s], z[slot == s])
                                                           for s in (0, 1)]))
    uncorrected = validation_metrics(raw, y, slot, slot, ("a", "b"))
    assert uncorrected["log_loss"] > m["log_loss"] + 0.1


def test_a_slot_of_one_class_is_left_out_of_the_mean_slot_auc_pr():
    """Breakage caught: averaging every slot (a click-less slot's NaN makes the selection metric
    NaN, so no epoch would ever improve), or counting an all-click slot, whose AP is 1 whatever
    the scores (it would only dilute the slots that rank)."""
    z = np.array([-2.0, -1.0, 0.5, 1.0, -1.0, 0.0, 1.0, -0.5, 0.3, 2.0])
    y = np.array([0, 1, 0, 1, 0, 0, 0, 1, 1, 1], dtype=float)        # slot 1: no click; slot 2: only clicks
    slot = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    m = validation_metrics(z, y, slot, slot, ("a", "b", "c"))
    assert m["mean_slot_auc_pr"] == pytest.approx(average_precision(y[:4], z[:4]))
    assert m["mean_slot_auc_pr"] < 0.9
    assert np.isnan(m["auc_pr_b"]) and m["auc_pr_c"] == 1.0


# ----------------------------------------------------------------------------- early stopping
LOWER, HIGHER = SELECTION_DIRECTION["log_loss"], SELECTION_DIRECTION["mean_slot_auc_pr"]


def verdicts(values, direction, patience):
    """epoch_verdict over a run's validation values, the state carried as _train carries it."""
    best, bad, out = None, 0, []
    for value in values:
        verdict = epoch_verdict(best, bad, value, direction, patience)
        best = value if verdict.improved else best
        bad = verdict.bad_epochs
        out.append(verdict)
    return out


def test_each_selection_metric_has_its_direction():
    """Breakage caught: a flipped sign (log loss maximised, AUC-PR minimised), or a metric conf
    accepts (core.config_models.SELECTION_METRICS) with no direction (a KeyError in _train).
    auc_pr itself is not a selection metric (the per-slot mean is)."""
    assert SELECTION_DIRECTION == {"log_loss": -1.0, "mean_slot_auc_pr": 1.0}
    assert set(SELECTION_DIRECTION) == set(SELECTION_METRICS)
    assert epoch_verdict(0.5, 0, 0.4, SELECTION_DIRECTION["log_loss"], 3).improved
    assert not epoch_verdict(0.5, 0, 0.6, SELECTION_DIRECTION["log_loss"], 3).improved
    assert epoch_verdict(0.5, 0, 0.6, SELECTION_DIRECTION["mean_slot_auc_pr"], 3).improved
    assert not epoch_verdict(0.5, 0, 0.4, SELECTION_DIRECTION["mean_slot_auc_pr"], 3).improved


@pytest.mark.parametrize("direction", [LOWER, HIGHER])
def test_training_stops_after_exactly_patience_epochs_without_improvement(direction):
    """Breakage caught: stopping one epoch early or late (``>`` for ``>=``), a tie counted as an
    improvement (``>= 0``), or an improvement that does not reset the count."""
    best, equal, worse = 0.5, 0.5, 0.5 - direction * 0.1
    better = 0.5 + direction * 0.1
    run = verdicts([best, equal, worse, better, worse, worse, equal], direction, patience=3)
    assert [v.improved for v in run] == [True, False, False, True, False, False, False]
    assert [v.bad_epochs for v in run] == [0, 1, 2, 0, 1, 2, 3]
    assert [v.stop for v in run] == [False] * 6 + [True]
    assert verdicts([best, worse], direction, patience=1)[-1].stop


@pytest.mark.parametrize("direction", [LOWER, HIGHER])
def test_a_non_finite_metric_never_improves_even_as_the_first(direction):
    """Breakage caught: dropping the isfinite check: a first NaN/inf epoch (or an inf that beats
    every finite value in the metric's direction) would become the run's model."""
    for bad in (math.nan, math.inf, -math.inf):
        first = epoch_verdict(None, 0, bad, direction, 2)
        assert (first.improved, first.bad_epochs, first.stop) == (False, 1, False)
        after = epoch_verdict(0.5, 0, bad, direction, 1)
        assert (after.improved, after.bad_epochs, after.stop) == (False, 1, True)
    assert [v.improved for v in verdicts([math.nan, 0.5], direction, 3)] == [False, True]


def _parquet(path, cat, label, seed) -> DataFile:
    """A feature-table file of one categorical (values 1, 2), one dense column and two slots."""
    rng = np.random.default_rng(seed)
    n = cat.size
    pq.write_table(pa.table({"cat_a": cat.astype(np.int64), "dense_a": rng.normal(size=n).astype(np.float32),
                             "label": label.astype(np.float32), "slot_id": rng.integers(0, 2, n),
                             "sample_weight": np.ones(n, np.float32)}), path)
    return DataFile(f"file://{path}", n)


@pytest.fixture(scope="module")
def contrary_files(tmp_path_factory):
    """Train: clicks where cat_a == 1; validation: where cat_a == 2. Every epoch that fits the
    train split better scores worse on validation, so the first epoch is the best one."""
    folder = tmp_path_factory.mktemp("contrary")
    rng = np.random.default_rng(0)
    train_cat, validation_cat = rng.integers(1, 3, 256), rng.integers(1, 3, 128)
    return (_parquet(folder / "train.parquet", train_cat, train_cat == 1, 1),
            _parquet(folder / "validation.parquet", validation_cat, validation_cat == 2, 2))


def tiny_job(files, out, **training) -> TrainJob:
    """A small CAMoE on ``files`` (train, validation), one local process: a constant learning
    rate (no warmup, no decay) and one reader thread, so every run is reproducible."""
    cfg = load_config()
    model = dataclasses.replace(cfg.model("camoe"), expert_hidden=(8,), tower_hidden=(4,), cross_layers=1,
                                cross_rank=2)
    settings = dataclasses.replace(cfg.training, **{
        "batch_size": 64, "learning_rate": 0.05, "warmup_steps": 0, "min_lr_ratio": 1.0, "seed": 0,
        "reader_workers": 1, "shuffle_buffer": 0, "mixed_precision": False, "use_sample_weight": False,
        **training})
    layout = FeatureLayout(("cat_a",), ("dense_a",), (3, 3), ("s0", "s1"), ("slot",), ((1, 2),))
    train, validation = files
    return TrainJob("tiny", model, settings, layout, ("audio", "video"), (0, 1), ShardPlan(((train,),)),
                    (validation,), str(out))


def assert_same_state(got, want):
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_the_run_keeps_the_best_epochs_weights_and_stops_after_patience_bad_epochs(contrary_files, tmp_path):
    """Validation log loss worsens after the first epoch. Breakage caught: returning the last
    epoch's weights as the best, choosing the best epoch in the wrong direction, or running
    past the patience (or ignoring the verdict's stop)."""
    result = train_worker(tiny_job(contrary_files, tmp_path, epochs=3, early_stopping_patience=1,
                                   selection_metric="log_loss"))
    losses = [h["log_loss"] for h in result["history"]]
    assert len(losses) == 2 and result["stopped_early"] and losses[1] > losses[0]
    assert result["best_epoch"] == int(np.argmin(losses)) == 0 and result["best_value"] == losses[0]
    # every epoch's checkpoint holds that epoch's weights (both are kept: the last two are)
    after_best = torch.load(checkpoints.checkpoint_path(tmp_path, 1), weights_only=False)["model"]
    after_last = torch.load(checkpoints.checkpoint_path(tmp_path, 2), weights_only=False)["model"]
    assert_same_state(result["best_state"], after_best)
    assert_same_state(result["final_state"], after_last)
    assert not torch.equal(result["best_state"]["towers.layers.0.weight"],
                           result["final_state"]["towers.layers.0.weight"])


def test_the_best_epoch_can_be_a_middle_one_and_never_a_nan_one(contrary_files, tmp_path, monkeypatch):
    """Validation values scripted (higher is better): NaN, 0.5, 0.6 (best), 0.6 (a tie), 0.4.
    Breakage caught: selecting the first finite or the last epoch, letting the NaN epoch or the
    tie win, or stopping anywhere but after the second epoch without improvement."""
    scripted = iter([math.nan, 0.5, 0.6, 0.6, 0.4])
    monkeypatch.setattr(training_loop, "evaluate", lambda *args, **kwargs: {"mean_slot_auc_pr": next(scripted)})
    weights_after = {}                                         # epochs done -> the weights then
    real_save = checkpoints.save

    def recording_save(out, payload, epoch):
        weights_after[epoch] = {k: v.detach().clone() for k, v in payload["model"].items()}
        return real_save(out, payload, epoch)

    monkeypatch.setattr(checkpoints, "save", recording_save)
    result = train_worker(tiny_job(contrary_files, tmp_path, epochs=6, early_stopping_patience=2,
                                   selection_metric="mean_slot_auc_pr"))
    assert len(result["history"]) == 5 and result["stopped_early"]
    assert result["best_epoch"] == 2 and result["best_value"] == 0.6
    assert_same_state(result["best_state"], weights_after[3])
    assert_same_state(result["final_state"], weights_after[5])
    assert not torch.equal(result["best_state"]["towers.layers.0.weight"], weights_after[5]["towers.layers.0.weight"])
