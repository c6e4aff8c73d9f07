"""The model artifact: ``model.pt`` (weights) and ``model.json`` (what the model is, what it was
trained on, how its scores return to traffic scale, how training went), as typed dataclasses.

Everything that reads an artifact (evaluation, batch scoring, the Spark UDF, the MLflow pyfunc,
the benches) goes through :class:`ModelArtifact`, so a field is parsed in one place. Reading is
tolerant: a field this code does not know is kept in ``extra`` and a field an artifact lacks takes
its default; a field without one is an :class:`ArtifactError` naming the key and the file. An
artifact trained before the daily store (format < 3: another table's ids, standardised dense
inputs) is refused: retrain it. The artifact records its training set (window, rates, seed,
pinned versions), so its train rows can be rebuilt exactly.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.config_models import ModelSettings, TrainingSettings
from core.training_sets import TrainingSetSpec, TrainingWindow
from training import checkpoints
from training.data import FeatureLayout

# 3: trained on the daily store (a training set, dense statistics in the weights); 1 and 2, on
# the layout before it, are refused (their ids and dense scale are another table's)
ARTIFACT_FORMAT = 3
DAILY_STORE_FORMAT = 3
WEIGHTS_FILE = "model.pt"
DESCRIPTION_FILE = "model.json"

# how predictions are brought back to traffic scale ("downsampling_correction")
CORRECTION_LOGIT_SHIFT = "logit_shift"      # logit + log(r_neg / r_pos) of the row's slot
CORRECTION_LOSS_WEIGHT = "loss_weight"      # trained with 1/rate example weights: nothing to add


class ArtifactError(ValueError):
    """A model.json that cannot be read; the message names the key and the file."""


@dataclass(frozen=True)
class TrainResult:
    """What rank 0 reports when training ends (the weights travel apart, into model.pt)."""
    run_id: str
    history: tuple[dict, ...]        # per epoch: train_loss and the corrected validation metrics
    best_epoch: int
    selection_metric: str
    best_value: float | None
    workers: int
    worker_batch_size: int
    global_batch_size: int
    steps_per_epoch: int
    backend: str
    examples_per_second_rank0: float
    stopped_early: bool = False
    train_seconds_rank0: float = 0.0
    launched_on: str | None = None   # torch_distributor: "driver" or "executors"

    @property
    def best(self) -> dict:
        """The selected epoch's entry of ``history``."""
        return self.history[self.best_epoch]


@dataclass(frozen=True)
class ModelArtifact:
    """One trained model's model.json."""
    run_id: str
    model: ModelSettings
    training: TrainingSettings
    layout: FeatureLayout
    tasks: tuple[str, ...]
    slot_to_task: tuple[int, ...]             # slot id -> task index under the model's grouping
    model_slots: tuple[str, ...]              # trained, hence validated, calibrated, evaluated, served on
    downsampling_correction: str
    slot_logit_shift: dict[str, float]        # per slot, from the training set's rates (zeros: loss-weighted)
    features_table: str
    features_version: int
    training_set: dict                        # core.training_sets.TrainingSetSpec.to_json()
    training_set_id: str
    training_sets_version: int                # the training_sets version the train rows were read at
    result: TrainResult
    train_rows: int = 0
    validation_rows: int = 0
    num_proc: int = 1
    grouping: str = ""
    wall_seconds: float | None = None
    format: int = ARTIFACT_FORMAT
    extra: dict = field(default_factory=dict)  # keys of a newer writer, kept as read

    # ------------------------------------------------------------------ what readers ask
    @property
    def input_columns(self) -> list[str]:
        """Feature-table columns the model reads, in its order (slot inputs derive from slot_id)."""
        return [*self.layout.categorical, *self.layout.dense, "slot_id"]

    def logit_shift(self) -> dict[str, float]:
        """Per slot, what scoring adds to the model's logits: log(r_neg / r_pos) of the training
        set's rates. A loss-weighted model is never corrected again."""
        if self.downsampling_correction == CORRECTION_LOSS_WEIGHT:
            return {s: 0.0 for s in self.layout.slots}
        return self.slot_logit_shift

    @property
    def spec(self) -> TrainingSetSpec:
        """The training set the model was trained on: window, rates, seed, pinned features version."""
        return TrainingSetSpec.from_json(self.training_set)

    @property
    def window(self) -> TrainingWindow:
        """The model's train, validation and test days."""
        return self.spec.window

    def build(self, state_dict: dict) -> nn.Module:
        """The model with these weights, in eval mode."""
        from training.model import FeatureSpec, build_model

        model = build_model(self.model, FeatureSpec.of(self.layout), len(self.tasks))
        model.load_state_dict(state_dict)
        return model.eval()

    # ------------------------------------------------------------------ model.json
    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        record.update(record.pop("extra"))
        return json.dumps(record, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str, source: str = DESCRIPTION_FILE) -> ModelArtifact:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{source}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(record).__name__}")
        record.setdefault("format", 1)
        if record["format"] > ARTIFACT_FORMAT:
            raise ArtifactError(f"{source}: format {record['format']} is newer than this code reads "
                                f"({ARTIFACT_FORMAT}); upgrade the platform to score this model")
        if record["format"] < DAILY_STORE_FORMAT:
            raise ArtifactError(f"{source}: format {record['format']}, trained on the feature layout before the "
                                "daily store: retrain")
        parsed = _from_record(cls, record, source, "")
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(parsed, extra={k: v for k, v in record.items() if k not in known})


def _from_record(cls, record: Any, source: str, where: str) -> Any:
    """``cls`` (a dataclass) from a JSON object: lists become the tuples the fields declare,
    nested dataclasses recurse, unknown keys are left to the caller."""
    if not isinstance(record, dict):
        raise ArtifactError(f"{source}: {where or 'the top level'} must be an object, got {type(record).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name == "extra":
            continue
        if f.name in record:
            values[f.name] = _coerce(hints[f.name], record[f.name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ArtifactError(f"{source}: missing key {key!r}")
    return cls(**values)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(options[0], value, source, key) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _from_record(hint, value, source, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ArtifactError(f"{source}: {key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, source, key) for v in value)
    return value


# ----------------------------------------------------------------------------- files
def save_artifact(out_dir: Path, artifact: ModelArtifact, state_dict: dict) -> Path:
    """model.pt, then model.json, each by rename: a folder with model.json holds a whole artifact."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_atomically(out_dir / WEIGHTS_FILE, lambda handle: torch.save(state_dict, handle))
    checkpoints.write_atomically(out_dir / DESCRIPTION_FILE, lambda handle: handle.write(artifact.to_json().encode()))
    return out_dir


def read_artifact(out_dir: str | Path) -> ModelArtifact:
    """The model.json of an artifact folder."""
    path = Path(out_dir) / DESCRIPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no model artifact ({DESCRIPTION_FILE}); was the training run "
                                "finished?")
    return ModelArtifact.from_json(path.read_text(), str(path))


def load_artifact(out_dir: str | Path) -> tuple[nn.Module, ModelArtifact]:
    """(model in eval mode, its description) from an artifact folder."""
    artifact = read_artifact(out_dir)
    return artifact.build(torch.load(Path(out_dir) / WEIGHTS_FILE, weights_only=True)), artifact
