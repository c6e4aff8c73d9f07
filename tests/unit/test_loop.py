"""The training step and model selection without Spark: padding, global batches, slot inputs,
the down-sampling correction a model records, and the corrected selection metric."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from core.config import load_config
from core.metrics import average_precision
from training.data import Batch, FeatureLayout
from training.distributed import Communicator
from training.loop import StepContext, threads_per_process, train_step, worker_batch_size
from training.loss import task_weights
from training.model import FeatureSpec, MultiTaskMoE, WideAndDeep
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
