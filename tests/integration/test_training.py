"""Training on real Petastorm shards of a real Delta snapshot: learning, distributed, training sets
chosen at training time (other windows and rates on one table, no rebuild, re-runs reading the same
rows). (A killed run resuming: tests/test_kill.py, with real processes.)"""
from __future__ import annotations

import collections
import datetime as dt
from dataclasses import replace

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from core import tables
from core.metrics import average_precision
from core.training_sets import TrainingWindow
from training.artifact import load_artifact
from training.checkpoints import checkpoints
from training.data import load_snapshot, make_reader
from training.inference import Scorer
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
    model, artifact = load_artifact(folder)
    assert artifact == trained                       # model.json reads back as what training wrote
    # the artifact records the training set: window (clipped to the days built), rates, seed, versions
    assert artifact.window == TrainingWindow(START, END - dt.timedelta(days=2), END - dt.timedelta(days=1),
                                             END - dt.timedelta(days=1), END, END)
    assert artifact.spec.rate_of == dict(cfg.sampling.rates) and artifact.spec.seed == cfg.sampling.seed
    assert artifact.spec.features_version == artifact.features_version == \
        tables.latest_version(spark, cfg.table(tables.FEATURES))
    assert artifact.training_set_id == artifact.spec.set_id
    assert artifact.training_sets_version <= tables.latest_version(spark, cfg.table(tables.TRAINING_SETS))
    validation = load_snapshot(spark, cfg.table(tables.FEATURES), trained.features_version,
                               *artifact.window.bounds("validation"))
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
    # an id admitted after the model was trained (>= its cardinality) scores as OOV, never an index error
    scorer = Scorer.build(model, artifact, shift, None)
    n = 5
    columns = {c: np.zeros(n, np.int64) for c in layout.categorical}
    columns.update({c: np.ones(n, np.float32) for c in layout.dense})
    oov = scorer.score(np.zeros(n, np.int64), lambda c, dtype: columns[c].astype(dtype), n)["pctr"]
    columns.update({c: np.full(n, size + 7, np.int64) for c, size in zip(layout.categorical, layout.cardinalities)})
    newer = scorer.score(np.zeros(n, np.int64), lambda c, dtype: columns[c].astype(dtype), n)["pctr"]
    assert np.isfinite(newer).all() and np.array_equal(newer, oov)


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


def _read_ids(files) -> collections.Counter:
    seen = collections.Counter()
    with make_reader(files, ["impression_id"], num_epochs=1, seed=1, workers=1) as reader:
        for chunk in reader:
            seen.update(i.decode() if isinstance(i, bytes) else i for i in chunk.impression_id)
    return seen


def test_two_trainings_of_other_windows_and_rates_share_one_table_and_each_rerun_reads_the_same_rows(spark,
                                                                                                   train_lake):
    """Two windows and rates chosen at training time on one features version: no rebuild (the
    features table's version stays), a re-run of either reuses its set (same id and files,
    nothing written to training_sets or sampling_rates), the rows read are exactly the set's
    (the train days of the window, down-sampled by the set's rates), and its sampling_rates rows
    report each stratum. Breakage caught: a set id that ignores the window or rates (the second
    training reads the first's rows), a reuse path that rewrites, a snapshot that reads another
    set's files, sampling applied to other days."""
    cfg = train_lake
    features, sets, rates_table = (cfg.table(t) for t in (tables.FEATURES, tables.TRAINING_SETS,
                                                          tables.SAMPLING_RATES))
    features_version = tables.latest_version(spark, features)
    first, first_meta = prepare(spark, cfg, "set-a", backend="local", num_proc=1, training_overrides=SMALL)
    written = (tables.latest_version(spark, sets), tables.latest_version(spark, rates_table))
    again, again_meta = prepare(spark, cfg, "set-a-again", backend="local", num_proc=1, training_overrides=SMALL)
    assert again_meta["training_set_id"] == first_meta["training_set_id"]
    assert (tables.latest_version(spark, sets), tables.latest_version(spark, rates_table)) == written
    assert again.train_plan == first.train_plan and again.validation_files == first.validation_files

    softer = replace(cfg, sampling=replace(cfg.sampling, rates={("stream_audio", 0): 0.5}))
    window_days = {"train_days": 2, "validation_days": 1, "test_days": 1}
    second, second_meta = prepare(spark, softer, "set-b", backend="local", num_proc=1, training_overrides=SMALL,
                                  end_date=END - dt.timedelta(days=1), window_days=window_days)
    set_id = second_meta["training_set_id"]
    assert set_id != first_meta["training_set_id"]
    window = TrainingWindow.ending(END - dt.timedelta(days=1), 2, 1, 1)
    assert second_meta["training_set"]["window"]["train_start"] == window.train_start.isoformat()
    assert tables.latest_version(spark, features) == features_version           # no rebuild
    files = [f for shard in second.train_plan.shards for f in shard]
    read = _read_ids(files)
    in_table = spark.sql(f"SELECT * FROM {sets} VERSION AS OF {second_meta['training_sets_version']}"
                         ).where(F.col("set_id") == set_id)
    assert set(read) == {r.impression_id for r in in_table.select("impression_id").collect()}
    assert set(read.values()) == {1} and sum(read.values()) == second_meta["train_rows"]
    # exactly the train days, every row but the down-sampled stratum's
    days = spark.sql(f"SELECT * FROM {features} VERSION AS OF {features_version}").where(
        F.col("event_date").between(window.train_start, window.train_end))
    kept_all = days.where((F.col("slot") != "stream_audio") | (F.col("label") == 1))
    assert {r.impression_id for r in kept_all.select("impression_id").collect()} <= set(read)
    audio_negatives = days.where((F.col("slot") == "stream_audio") & (F.col("label") == 0)).count()
    kept = in_table.where((F.col("slot") == "stream_audio") & (F.col("label") == 0))
    assert abs(kept.count() - 0.5 * audio_negatives) < 4 * (audio_negatives * 0.25) ** 0.5
    assert {r[0] for r in kept.select("sample_weight").distinct().collect()} == {2.0}
    report = {(r.slot, r.label): r for r in spark.table(rates_table).where(F.col("set_id") == set_id).collect()}
    assert len(report) == 2 * len(cfg.taxonomy.slot_names)
    assert report[("stream_audio", 0)].rate == 0.5 and report[("stream_audio", 0)].rows_before == audio_negatives
    assert report[("stream_audio", 0)].rows_after == kept.count()
    assert sum(r.rows_after for r in report.values()) == second_meta["train_rows"]
    assert report[("podcast", 1)].rows_before == report[("podcast", 1)].rows_after > 0

    written = (tables.latest_version(spark, sets), tables.latest_version(spark, rates_table))
    rerun, rerun_meta = prepare(spark, softer, "set-b-again", backend="local", num_proc=1, training_overrides=SMALL,
                                end_date=END - dt.timedelta(days=1), window_days=window_days)
    assert rerun_meta["training_set_id"] == set_id and rerun.train_plan == second.train_plan
    assert (tables.latest_version(spark, sets), tables.latest_version(spark, rates_table)) == written
    assert _read_ids(files) == read
    # the first set's rows are still there, untouched by the second's write
    assert _read_ids([f for shard in first.train_plan.shards for f in shard]) == \
        _read_ids([f for shard in again.train_plan.shards for f in shard])


def test_a_window_the_table_cannot_serve_is_refused_naming_its_days(spark, train_lake):
    with pytest.raises(ValueError, match=r"lacks the validation/test day\(s\) 2026-01-07"):
        prepare(spark, train_lake, "late", backend="local", num_proc=1, end_date=END + dt.timedelta(days=1))


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
