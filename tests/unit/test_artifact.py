"""model.json as training.artifact.ModelArtifact: written and read back equal, older artifacts
(no format, no slot inputs, no model_slots) still load, a newer writer's keys survive a rewrite,
and a broken file is named with its key."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from core.config import load_config
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


def _artifact(**changes) -> ModelArtifact:
    cfg = load_config()
    layout = FeatureLayout(categorical=("cat_user_id", "cat_ad_id"), dense=("dense_hour",),
                           cardinalities=(11, 7, len(SLOTS) + 1), slots=SLOTS, slot_features=("slot",),
                           slot_feature_ids=((1, 2, 3),))
    result = TrainResult(run_id="r-train", history=({"epoch": 0, "train_loss": 0.5, "log_loss": 0.4},),
                         best_epoch=0, selection_metric="log_loss", best_value=0.4, workers=2, worker_batch_size=128,
                         global_batch_size=256, steps_per_epoch=3, backend="horovod", examples_per_second_rank0=99.0)
    artifact = ModelArtifact(run_id="r-train", model=cfg.model("camoe"), training=cfg.training, layout=layout,
                             tasks=("audio", "video"), slot_to_task=(0, 0, 1), model_slots=SLOTS,
                             downsampling_correction="logit_shift",
                             slot_logit_shift={"stream_audio": -2.3, "podcast": -1.2, "stream_video": 0.0},
                             features_table="camoe.features", features_version=4, build_run_id="b-1", result=result,
                             train_rows=1000, validation_rows=200, num_proc=2, grouping="audio_video",
                             wall_seconds=12.5)
    return dataclasses.replace(artifact, **changes)


def test_written_and_read_back_equal_weights_included(tmp_path):
    artifact = _artifact()
    model = artifact.build(_random_state(artifact))
    save_artifact(tmp_path, artifact, model.state_dict())
    loaded, read = load_artifact(tmp_path)
    assert read == artifact and read.format == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert read.input_columns == ["cat_user_id", "cat_ad_id", "dense_hour", "slot_id"]
    assert read.result.best == {"epoch": 0, "train_loss": 0.5, "log_loss": 0.4}


def _random_state(artifact: ModelArtifact) -> dict:
    torch.manual_seed(0)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in _fresh_state(artifact).items()}


def _fresh_state(artifact: ModelArtifact) -> dict:
    from training.model import FeatureSpec, build_model

    spec = FeatureSpec(artifact.layout.cardinalities, len(artifact.layout.dense))
    return build_model(artifact.model, spec, len(artifact.tasks)).state_dict()


def test_an_artifact_from_before_format_slot_inputs_and_model_slots_loads_as_it_was_trained(tmp_path):
    record = json.loads(_artifact().to_json())
    for key in ("format", "model_slots"):
        del record[key]
    del record["model"]["slot_features"]
    for key in ("slot_features", "slot_feature_ids"):
        del record["layout"][key]
    record["layout"]["cardinalities"] = [11, 7]
    old = ModelArtifact.from_json(json.dumps(record), "old/model.json")
    assert old.format == 1
    assert old.model.slot_features == ()           # trained without slot inputs, not today's default
    assert old.layout.slot_features == () and old.layout.slot_feature_ids == ()
    assert old.model_slots == SLOTS                 # every slot of the build
    model = old.build(_fresh_state(old))            # the weights of a model without slot inputs fit
    assert model.training is False


def test_a_newer_writers_keys_are_kept_and_a_newer_format_is_refused():
    record = json.loads(_artifact().to_json())
    record["drift_monitor"] = {"window_days": 7}
    read = ModelArtifact.from_json(json.dumps(record))
    assert read.extra == {"drift_monitor": {"window_days": 7}}
    assert json.loads(read.to_json())["drift_monitor"] == {"window_days": 7}
    record["format"] = 3
    with pytest.raises(ArtifactError, match=r"m/model.json: format 3 is newer than this code reads \(2\)"):
        ModelArtifact.from_json(json.dumps(record), "m/model.json")


@pytest.mark.parametrize(("breaking", "message"), [
    (lambda r: r.pop("features_version"), "missing key 'features_version'"),
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
    assert _artifact(slot_logit_shift=None).logit_shift() is None      # older artifact: from sampling_rates
    # from before either field: the training settings say how it was trained
    record = json.loads(_artifact().to_json())
    del record["downsampling_correction"], record["slot_logit_shift"]
    assert ModelArtifact.from_json(json.dumps(record)).logit_shift() is None
    record["training"]["use_sample_weight"] = True
    assert ModelArtifact.from_json(json.dumps(record)).logit_shift() == dict.fromkeys(SLOTS, 0.0)
