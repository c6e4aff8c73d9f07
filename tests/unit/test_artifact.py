"""model.json as training.artifact.ModelArtifact: written and read back equal with its training
set (window, rates, versions) and its dense statistics in the weights, an artifact from before the
daily store refused, a newer writer's keys survive a rewrite, and a broken file is named with its key."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
import torch

from core.config import load_config
from core.training_sets import TrainingSetSpec, TrainingWindow
from training.artifact import (
    CORRECTION_LOSS_WEIGHT,
    ArtifactError,
    ModelArtifact,
    TrainResult,
    load_artifact,
    read_artifact,
    save_artifact,
)
from training.data import FeatureLayout

SLOTS = ("stream_audio", "podcast", "stream_video")
WINDOW = TrainingWindow.ending(dt.date(2026, 1, 10), 8, 1, 1)
SPEC = TrainingSetSpec.of("camoe.features", 4, WINDOW, {("stream_audio", 0): 0.1, ("podcast", 0): 0.3}, 11)


def _artifact(**changes) -> ModelArtifact:
    cfg = load_config()
    layout = FeatureLayout(categorical=("cat_user_id", "cat_ad_id"), dense=("dense_hour",),
                           cardinalities=(11, 7, len(SLOTS) + 1), slots=SLOTS, slot_features=("slot",),
                           slot_feature_ids=((1, 2, 3),), dense_mean=(11.5,), dense_std=(6.9,))
    result = TrainResult(run_id="r-train", history=({"epoch": 0, "train_loss": 0.5, "log_loss": 0.4},),
                         best_epoch=0, selection_metric="log_loss", best_value=0.4, workers=2, worker_batch_size=128,
                         global_batch_size=256, steps_per_epoch=3, backend="horovod", examples_per_second_rank0=99.0)
    artifact = ModelArtifact(run_id="r-train", model=cfg.model("camoe"), training=cfg.training, layout=layout,
                             tasks=("audio", "video"), slot_to_task=(0, 0, 1), model_slots=SLOTS,
                             downsampling_correction="logit_shift",
                             slot_logit_shift={"stream_audio": -2.3, "podcast": -1.2, "stream_video": 0.0},
                             features_table="camoe.features", features_version=4, training_set=SPEC.to_json(),
                             training_set_id=SPEC.set_id, training_sets_version=2, result=result,
                             train_rows=1000, validation_rows=200, num_proc=2, grouping="audio_video",
                             wall_seconds=12.5)
    return dataclasses.replace(artifact, **changes)


def test_written_and_read_back_equal_weights_included(tmp_path):
    artifact = _artifact()
    model = artifact.build(_random_state(artifact))
    save_artifact(tmp_path, artifact, model.state_dict())
    loaded, read = load_artifact(tmp_path)
    assert read == artifact and read.format == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # what the model was trained on, enough to rebuild its training set exactly
    assert read.spec == SPEC and read.window == WINDOW and read.training_set_id == SPEC.set_id
    assert (read.features_version, read.training_sets_version) == (4, 2)
    assert read.spec.rate_of == {("stream_audio", 0): 0.1, ("podcast", 0): 0.3}
    assert read.input_columns == ["cat_user_id", "cat_ad_id", "dense_hour", "slot_id"]
    assert read.result.best == {"epoch": 0, "train_loss": 0.5, "log_loss": 0.4}


def test_the_dense_statistics_travel_in_the_weights_file(tmp_path):
    """Breakage caught: statistics kept as non-persistent buffers (a loaded model standardises
    with 0 and 1) or not built from the layout (a model that never standardises)."""
    artifact = _artifact()
    save_artifact(tmp_path, artifact, artifact.build(_random_state(artifact)).state_dict())
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert weights["standardize.mean"].tolist() == pytest.approx([11.5])
    assert weights["standardize.std"].tolist() == pytest.approx([6.9])
    model, _ = load_artifact(tmp_path)
    assert model.standardize(torch.tensor([[11.5 + 6.9]])).item() == pytest.approx(1.0)


def _random_state(artifact: ModelArtifact) -> dict:
    torch.manual_seed(0)
    state = _fresh_state(artifact)
    return {k: torch.randn_like(v) if v.is_floating_point() and not k.startswith("standardize.") else v
            for k, v in state.items()}


def _fresh_state(artifact: ModelArtifact) -> dict:
    from training.model import FeatureSpec, build_model

    return build_model(artifact.model, FeatureSpec.of(artifact.layout), len(artifact.tasks)).state_dict()


@pytest.mark.parametrize("old_format", [None, 1, 2])
def test_an_artifact_from_before_the_daily_store_is_refused_with_retrain(old_format):
    """Its ids are another build's and its dense inputs were standardised by the table: scoring
    today's raw values with it would be silently wrong."""
    record = json.loads(_artifact().to_json())
    for key in ("training_set", "training_set_id", "training_sets_version"):
        del record[key]
    record["build_run_id"] = "b-1"
    if old_format is None:
        del record["format"]
    else:
        record["format"] = old_format
    with pytest.raises(ArtifactError, match=r"^old/model.json: format [12], trained on the feature layout "
                                            r"before the daily store: retrain$"):
        ModelArtifact.from_json(json.dumps(record), "old/model.json")


def test_a_newer_writers_keys_are_kept_and_a_newer_format_is_refused():
    record = json.loads(_artifact().to_json())
    record["drift_monitor"] = {"window_days": 7}
    read = ModelArtifact.from_json(json.dumps(record))
    assert read.extra == {"drift_monitor": {"window_days": 7}}
    assert json.loads(read.to_json())["drift_monitor"] == {"window_days": 7}
    record["format"] = 4
    with pytest.raises(ArtifactError, match=r"m/model.json: format 4 is newer than this code reads \(3\)"):
        ModelArtifact.from_json(json.dumps(record), "m/model.json")


@pytest.mark.parametrize(("breaking", "message"), [
    (lambda r: r.pop("features_version"), "missing key 'features_version'"),
    (lambda r: r.pop("training_set_id"), "missing key 'training_set_id'"),
    (lambda r: r["layout"].pop("cardinalities"), "missing key 'layout.cardinalities'"),
    (lambda r: r["result"].__setitem__("history", 3), "result.history must be a list, got 3"),
    (lambda r: r.__setitem__("model", "camoe"), "model must be an object, got str"),
])
def test_a_broken_model_json_names_the_key_and_the_file(breaking, message):
    record = json.loads(_artifact().to_json())
    breaking(record)
    with pytest.raises(ArtifactError, match=f"^a/model.json: {message}"):
        ModelArtifact.from_json(json.dumps(record), "a/model.json")


def test_no_artifact_and_a_file_that_is_not_json_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no model artifact"):
        read_artifact(tmp_path)
    (tmp_path / "model.json").write_text("{cut")
    with pytest.raises(ArtifactError, match="model.json: not JSON"):
        read_artifact(tmp_path)


def test_the_logit_shift_scoring_adds_is_recorded_and_zero_for_a_loss_weighted_model():
    assert _artifact().logit_shift() == {"stream_audio": -2.3, "podcast": -1.2, "stream_video": 0.0}
    weighted = _artifact(downsampling_correction=CORRECTION_LOSS_WEIGHT)
    assert weighted.logit_shift() == dict.fromkeys(SLOTS, 0.0)
