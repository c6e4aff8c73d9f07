"""Training on real Petastorm shards of a real Delta snapshot: learning, distributed. (A killed
run resuming: tests/test_kill.py, with real processes.)"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from core import tables
from core.metrics import average_precision
from training.artifact import load_artifact
from training.checkpoints import checkpoints
from training.data import load_snapshot
from training.loop import new_model
from training.runner import prepare, train
from training.validation_scoring import evaluate, score

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 6)
# one reader thread: with more, Petastorm's row-group order follows thread timing (not
# reproducible under load), and the resume test compares weights of two separate runs
SMALL = {"batch_size": 256, "learning_rate": 0.01, "shuffle_buffer": 0, "warmup_steps": 5,
         "reader_workers": 1}


@pytest.fixture(scope="module")
def train_lake(eval_lake):
    """The evaluation suite's snapshot (tests/integration/conftest.py): START..END, 8000 a day."""
    return eval_lake


def test_local_training_learns_and_the_artifact_scores_like_training(spark, train_lake, tmp_path):
    cfg = train_lake
    result, trained, folder = train(spark, cfg, "local-1", backend="local", num_proc=1, epochs=2,
                                    output_dir=tmp_path / "m", training_overrides=SMALL)
    assert len(result.history) == 2 and result.workers == 1
    best = result.best
    validation = load_snapshot(spark, cfg.table(tables.FEATURES), trained.features_version, "validation")
    model, artifact = load_artifact(folder)
    assert artifact == trained                       # model.json reads back as what training wrote
    slot_to_task = torch.tensor(artifact.slot_to_task)
    layout = artifact.layout
    # the slot is a model input: one more categorical, 7 slots + OOV
    assert layout.slot_features == ("slot",) and layout.cardinalities[-1] == 8
    assert layout.input_names[-1] == "slot_input_slot"
    scored = score(model, validation.files, layout, slot_to_task)
    assert scored["label"].size == validation.rows
    # selection metrics are on corrected scores: logit + log(r_neg / r_pos) of the row's slot
    shift = np.array([artifact.slot_logit_shift[s] for s in layout.slots])
    assert shift[0] == pytest.approx(np.log(0.1)) and shift[4] == 0.0
    z = scored["logit"] + shift[scored["slot"]]
    y = scored["label"]
    assert average_precision(y, z) == pytest.approx(best["auc_pr"], abs=1e-6)
    assert np.mean(np.logaddexp(0, z) - y * z) == pytest.approx(best["log_loss"], rel=1e-5)
    assert result.selection_metric == "log_loss"
    assert result.best_epoch == int(np.argmin([h["log_loss"] for h in result.history]))
    # better than chance: the base rate is the AUC-PR of a random ranking
    assert best["auc_pr"] > 1.5 * y.mean()
    assert set(artifact.tasks) == {"audio", "video"}
    assert np.isfinite(best["auc_pr_audio"]) and np.isfinite(best["auc_pr_video"])
    assert artifact.downsampling_correction == "logit_shift"


def test_a_loss_weighted_run_records_that_it_needs_no_correction(spark, train_lake):
    weighted, _ = prepare(spark, train_lake, "weighted", backend="local", num_proc=1,
                          training_overrides={**SMALL, "use_sample_weight": True})
    assert weighted.correction == "loss_weight" and set(weighted.slot_logit_shift) == {0.0}
    plain, _ = prepare(spark, train_lake, "plain", backend="local", num_proc=1, training_overrides=SMALL)
    assert plain.correction == "logit_shift" and plain.slot_logit_shift[0] == pytest.approx(np.log(0.1))
    uni, _ = prepare(spark, train_lake, "uni", model_name="unimodal_video", backend="local", num_proc=1)
    assert [uni.layout.slots[i] for i in uni.train_slots] == ["stream_video", "embedded_music", "podcast_video"]
    with pytest.raises(ValueError, match="global batch"):
        prepare(spark, train_lake, "odd", backend="horovod", num_proc=2, training_overrides={"batch_size": 255})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch_distributor", "horovod"])
def test_two_processes_end_with_identical_weights(spark, train_lake, tmp_path, backend):
    """The ranks' weights are equal by the loop's per-epoch broadcast of rank 0's, whatever the
    gradients were; their Adam moments are not broadcast, so they are equal only when every rank
    stepped with the same, averaged, gradients: a back end that does not average (a missing DDP
    wrap or DistributedOptimizer, a local gradient step) leaves the ranks' exp_avg apart."""
    if backend == "horovod":
        import horovod.torch  # noqa: F401  (declared: `make env` builds it; a build without it fails here)
    cfg = train_lake
    result, _, _ = train(spark, cfg, f"dist-{backend}", backend=backend, num_proc=2, epochs=2,
                         output_dir=tmp_path / backend, training_overrides=SMALL, save_rank_states=True)
    assert result.workers == 2 and result.backend == backend
    # one global batch: 2 workers x 128 rows take the steps 1 worker x 256 rows takes
    assert result.worker_batch_size == SMALL["batch_size"] // 2
    one, _ = prepare(spark, cfg, "one", backend="local", num_proc=1, training_overrides=SMALL)
    assert abs(result.steps_per_epoch - one.train_plan.steps_per_epoch(SMALL["batch_size"])) <= 1
    rank0 = torch.load(tmp_path / backend / "final_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / backend / "final_rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:                  # the per-epoch broadcast (parameters and BatchNorm buffers)
        assert torch.equal(rank0[name], rank1[name]), name
    optimizer0, optimizer1 = (torch.load(tmp_path / backend / f"final_rank{r}_optimizer.pt", weights_only=True)
                              for r in (0, 1))
    assert optimizer0["param_groups"] == optimizer1["param_groups"]        # the same schedule
    state0, state1 = optimizer0["state"], optimizer1["state"]
    # every parameter has moments, and every one of the 2 epochs' steps had a real batch on the
    # larger shard, so each took exactly 2 x steps_per_epoch Adam steps (none skipped, none doubled)
    assert state0.keys() == state1.keys() == set(range(len(optimizer0["param_groups"][0]["params"])))
    assert {float(s["step"]) for s in state0.values()} == {2.0 * result.steps_per_epoch}
    for index in state0:
        for moment in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state0[index][moment], state1[index][moment]), (index, moment)
    # the last epoch's recorded AUC-PR is the validation AUC-PR of the weights the run ended with
    # (not another epoch's, not another model's), and training learned: well above the base rate,
    # the AUC-PR of a random ranking (a run whose steps changed nothing scores near it)
    model = new_model(one)
    model.load_state_dict(rank0)
    final = evaluate(model, one.validation_files, one.layout, torch.tensor(one.slot_to_task), one.tasks,
                     slot_logit_shift=one.slot_logit_shift, slots=one.train_slots)
    last = result.history[-1]
    assert last["epoch"] == 1 and last["rows"] == final["rows"] == sum(f.rows for f in one.validation_files)
    assert last["auc_pr"] == pytest.approx(final["auc_pr"], abs=1e-6)
    assert last["log_loss"] == pytest.approx(final["log_loss"], rel=1e-5)
    base_rate = score(model, one.validation_files, one.layout, torch.tensor(one.slot_to_task))["label"].mean()
    assert last["auc_pr"] > 1.5 * base_rate



def test_a_resumed_run_keeps_its_early_stopping_state_and_ends_as_an_uninterrupted_one(spark, train_lake,
                                                                                        tmp_path):
    """With the default shuffle buffer and early stopping in play: a run (patience 2, a learning
    rate high enough to overfit this small lake) stops after two worse epochs; the same run cut
    back to its checkpoint before the last epoch (as a kill there leaves it) resumes, trains that
    epoch again and ends where the uninterrupted run ended. Breakage caught: the checkpoint's
    early-stopping state not restored (bad epochs reset: the resumed run trains on), its best
    weights not restored (the artifact holds another epoch's), the shuffle or the optimizer not
    reproduced on resume (the last epoch's weights and validation loss differ)."""
    overrides = {**SMALL, "shuffle_buffer": 20000, "learning_rate": 0.05, "early_stopping_patience": 2}
    straight, _, straight_folder = train(spark, train_lake, "resume-a", backend="local", num_proc=1, epochs=6,
                           output_dir=tmp_path / "a", training_overrides=overrides)
    assert straight.stopped_early and [h["epoch"] for h in straight.history] == [0, 1, 2]
    assert straight.best_epoch == 0                     # epochs 1 and 2 worse: the patience used up

    first, _, folder = train(spark, train_lake, "resume-b", backend="local", num_proc=1, epochs=6,
                             output_dir=tmp_path / "b", training_overrides=overrides)
    newest, before = checkpoints(folder)
    last_epoch = torch.load(newest, weights_only=False)["model"]
    resumed_from = torch.load(before, weights_only=False)["state"]
    assert (resumed_from["epoch"], resumed_from["bad_epochs"], resumed_from["best_epoch"]) == (2, 1, 0)
    newest.unlink()
    (folder / "model.json").unlink()

    again, _, folder = train(spark, train_lake, "resume-b", backend="local", num_proc=1, epochs=6,
                             output_dir=tmp_path / "b", training_overrides=overrides)
    assert again.stopped_early and again.best_epoch == 0
    timing = ("train_seconds",)
    assert [{k: v for k, v in h.items() if k not in timing} for h in again.history] == \
        [{k: v for k, v in h.items() if k not in timing} for h in straight.history]
    for name, tensor in torch.load(checkpoints(folder)[0], weights_only=False)["model"].items():
        torch.testing.assert_close(tensor, last_epoch[name], rtol=1e-5, atol=1e-6)
    (straight_model, _), (again_model, _) = load_artifact(straight_folder), load_artifact(folder)
    for name, tensor in straight_model.state_dict().items():     # epoch 0's weights, kept as the best
        torch.testing.assert_close(again_model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)
