"""MLflow tracking and model registry around the jobs (conf ``mlflow:``).

- ``log_training`` (jobs/train.py): one MLflow run per training run, named by the platform's run
  id: the resolved model and training settings as params, the per-epoch metrics (step = epoch),
  the Delta input with its version, the code version, and the model as a pyfunc (uncalibrated).
- ``log_evaluation`` (jobs/calibrate_evaluate.py): into the same MLflow run, the temperatures, the
  per-slot and per-task test metrics of ``slot_metrics`` (after temperature) and the plots; the
  calibrated pyfunc is registered as ``mlflow.registered_model`` and ``mlflow.alias`` moves to it.
- ``resolve_model``: a ``models:/name@alias`` (or any model URI) back to the project's artifact
  folder, down-sampling correction and temperatures, for jobs/score.py.

The embedded default is a SQLite store and an artifact folder under ``storage.artifacts_dir/mlflow``
(``make mlflow-ui`` browses it); ``mlflow.tracking_uri`` in conf, else ``MLFLOW_TRACKING_URI``,
points at a team's tracking server instead. ``camoe.runs`` stays the SQL lineage; its rows name
their MLflow run (``mlflow_run_id``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.artifact import DESCRIPTION_FILE, WEIGHTS_FILE, ModelArtifact
from training.mlflow_model import MODEL_ARTIFACT, SCORING_ARTIFACT, SCORING_FILE, Scoring

log = logging.getLogger(__name__)

RUN_ID_TAG = "camoe.run_id"               # the platform's run id (camoe.runs) of an MLflow run
TRAINED_MODEL = "model"                   # the run's uncalibrated pyfunc
CALIBRATED_MODEL = "calibrated_model"     # the run's pyfunc with the temperatures of its evaluation


def mlflow_dir(cfg) -> Path:
    return cfg.storage.artifacts_dir / "mlflow"


def tracking_uri(cfg) -> str:
    """conf ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or _embedded_uri(cfg)


def _embedded_uri(cfg) -> str:
    return f"sqlite:///{(mlflow_dir(cfg) / 'mlflow.db').resolve()}"


def connect(cfg):
    """The mlflow module, pointed at this config's store and experiment (created if new)."""
    import mlflow

    # MLflow and alembic log their database set-up at INFO on their own handlers; no progress
    # bars for artifact transfers in a batch job's log
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
        mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=(
            (mlflow_dir(cfg) / "artifacts").resolve().as_uri() if uri == _embedded_uri(cfg) else None))
    mlflow.set_experiment(cfg.mlflow.experiment)
    return mlflow


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: ``model.expert_hidden`` -> ``[128, 64]``."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = str(list(value) if isinstance(value, tuple) else value)
    return out


def training_set_params(artifact: ModelArtifact) -> dict[str, Any]:
    """The training set as MLflow params: its id, window days, seed, rates, the versions read."""
    spec = artifact.spec
    return {"id": artifact.training_set_id, "window": {k: str(v) for k, v in asdict(spec.window).items()},
            "seed": spec.seed, "training_sets_version": artifact.training_sets_version,
            "rates": ", ".join(f"{slot}|{label}={rate:g}" for (slot, label), rate in spec.rates) or "none"}


def epoch_metrics(history: Iterable[Mapping[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """(epoch, finite numeric metrics) of a training history."""
    out = []
    for entry in history:
        numbers = {k: float(v) for k, v in entry.items() if k != "epoch" and isinstance(v, (int, float))
                   and not isinstance(v, bool) and math.isfinite(v)}
        out.append((int(entry["epoch"]), numbers))
    return out


def delta_source(table: str, version: int):
    """An MLflow Delta dataset source for ``table`` at ``version``.

    The name is given with its catalog (``spark_catalog.db.table``): a two-part name makes MLflow
    take the database for a Unity Catalog catalog and call Databricks to look the table up. And
    the version is always written: MLflow's own ``to_dict`` drops version 0, a first build's."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    class PinnedDeltaSource(DeltaDatasetSource):
        def to_dict(self):
            return {**super().to_dict(), "delta_table_version": self._delta_table_version}

    full = table if table.count(".") >= 2 else f"spark_catalog.{table}"
    return PinnedDeltaSource(delta_table_name=full, delta_table_version=int(version))


def _code_tags() -> dict[str, str]:
    from core.lineage import code_version

    version = code_version()
    tags = {"camoe.code_version": version}
    sha = version.removesuffix("-dirty")
    if all(c in "0123456789abcdef" for c in sha) and len(sha) >= 7:
        tags["mlflow.source.git.commit"] = sha
    return tags


def _pip_requirements() -> list[str]:
    """Pinned to what the jobs run with (MLflow would otherwise load the model again to infer them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("camoe", "torch", "numpy", "pandas", "mlflow"):
        try:
            out.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pass
    return out


def _log_pyfunc(mlflow, artifact: ModelArtifact, artifact_dir: Path, scoring: Scoring, name: str):
    from training import mlflow_entry
    from training.mlflow_model import signature

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # the signature is given; an input example would only make MLflow load the model again
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        scoring_file = Path(scratch) / SCORING_FILE
        scoring_file.write_text(scoring.to_json())
        # the weights and model.json only: the folder's epoch checkpoints (optimizer state
        # included) are for resuming, not scoring, and would double what every logged model stores
        model_dir = Path(scratch) / "model"
        model_dir.mkdir()
        for file in (WEIGHTS_FILE, DESCRIPTION_FILE):
            shutil.copyfile(Path(artifact_dir) / file, model_dir / file)
        return mlflow.pyfunc.log_model(
            name=name, python_model=mlflow_entry.__file__, signature=signature(artifact),
            artifacts={MODEL_ARTIFACT: str(model_dir), SCORING_ARTIFACT: str(scoring_file)},
            pip_requirements=_pip_requirements())


def log_training(cfg, run_id: str, artifact_dir: Path, artifact: ModelArtifact) -> str | None:
    """Log one finished training run; returns the MLflow run id (None when ``mlflow.enabled`` is
    false)."""
    if not cfg.mlflow.enabled:
        return None
    mlflow = connect(cfg)
    from mlflow.data.meta_dataset import MetaDataset

    from core.tables import TRAINING_SETS

    result = artifact.result
    table, version = artifact.features_table, artifact.features_version
    with mlflow.start_run(run_name=run_id, tags={RUN_ID_TAG: run_id, "camoe.job": "train", **_code_tags()}) as run:
        mlflow.log_params(flat_params({
            "model": asdict(artifact.model), "training": asdict(artifact.training),
            "tasks": list(artifact.tasks), "backend": result.backend, "workers": result.workers,
            "features_table": table, "features_version": version, "training_set": training_set_params(artifact),
            "train_rows": artifact.train_rows, "validation_rows": artifact.validation_rows}))
        mlflow.log_dict(artifact.training_set, "training_set.json")      # the spec, to rebuild the set exactly
        for epoch, values in epoch_metrics(result.history):
            mlflow.log_metrics(values, step=epoch)
        mlflow.log_metrics({"best_epoch": result.best_epoch, f"best_{result.selection_metric}": result.best_value,
                            "examples_per_second_rank0": result.examples_per_second_rank0})
        # the snapshots trained and validated on, as Delta datasets (no profile: that would scan them)
        mlflow.log_input(MetaDataset(delta_source(cfg.table(TRAINING_SETS), artifact.training_sets_version),
                                     name=f"{artifact.training_set_id}@v{artifact.training_sets_version}",
                                     digest=artifact.training_set_id), context="training")
        mlflow.log_input(MetaDataset(delta_source(table, version), name=f"{table}@v{version}",
                                     digest=f"{table}@{version}"[-36:]), context="validation")
        _log_pyfunc(mlflow, artifact, artifact_dir,
                    Scoring(artifact.logit_shift(), {t: 1.0 for t in artifact.tasks}, run_id), TRAINED_MODEL)
    log.info("MLflow run %s (experiment %s at %s)", run.info.run_id, cfg.mlflow.experiment, tracking_uri(cfg))
    return run.info.run_id


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    alias: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def evaluation_metrics(rows: Iterable[Mapping[str, Any]],
                       metrics: tuple[str, ...] = ("auc_pr", "log_loss", "normalized_entropy", "ece_equal_mass",
                                                   "calibration_ratio", "auc_pr_oracle_fraction")) -> dict[str, float]:
    """``test_<metric>`` overall and ``test_<metric>.<slot>`` / ``.task.<task>`` from the calibrated
    rows of ``slot_metrics`` (finite values only)."""
    out = {}
    for row in rows:
        if not row["calibrated"]:
            continue
        where = {"all": "", "slot": f".{row['slot']}", "task": f".task.{row['slot']}"}.get(row["level"])
        if where is None:
            continue
        for metric in metrics:
            value = row.get(metric)
            if value is not None and math.isfinite(value):
                out[f"test_{metric}{where}"] = float(value)
    return out


def log_evaluation(cfg, evaluation_run_id: str, train_run_id: str, train_mlflow_run_id: str | None,
                   artifact_dir: Path, artifact: ModelArtifact, slot_logit_shift: Mapping[str, float],
                   temperatures: Mapping[str, float], metric_rows: Iterable[Mapping[str, Any]],
                   plots: Iterable[str]) -> tuple[str, RegisteredModel] | None:
    """Log an evaluation into its training run's MLflow run (a new run named after the training
    run if that one was not tracked), register the calibrated model and move the alias to it.
    Returns (MLflow run id, the registered version), None when ``mlflow.enabled`` is false."""
    if not cfg.mlflow.enabled:
        return None
    mlflow = connect(cfg)
    start = {"run_id": train_mlflow_run_id} if train_mlflow_run_id else {
        "run_name": train_run_id, "tags": {RUN_ID_TAG: train_run_id, "camoe.job": "train", **_code_tags()}}
    with mlflow.start_run(**start) as run:
        mlflow.set_tag("camoe.evaluation_run_id", evaluation_run_id)
        mlflow.log_metrics({f"temperature.{task}": float(t) for task, t in temperatures.items()})
        mlflow.log_metrics(evaluation_metrics(metric_rows))
        for plot in plots:
            mlflow.log_artifact(plot, artifact_path=f"evaluation/{evaluation_run_id}")
        info = _log_pyfunc(mlflow, artifact, artifact_dir,
                           Scoring(slot_logit_shift, temperatures, train_run_id, evaluation_run_id), CALIBRATED_MODEL)
    name, alias = cfg.mlflow.registered_model, cfg.mlflow.alias
    with contextlib.redirect_stderr(io.StringIO()):      # its "Successfully registered" lines: logged below
        version = mlflow.register_model(info.model_uri, name, tags={RUN_ID_TAG: train_run_id,
                                                                    "camoe.evaluation_run_id": evaluation_run_id})
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    registered = RegisteredModel(name, str(version.version), alias)
    log.info("registered %s version %s; %s points at it", name, registered.version, registered.uri)
    return run.info.run_id, registered


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI's contents in the project's terms."""
    artifact_dir: Path          # model.pt + model.json
    scoring: Scoring


def resolve_model(cfg, model_uri: str, download_dir: Path) -> ResolvedModel:
    """Download a CAMoE pyfunc (``models:/camoe@champion``, ``runs:/<id>/calibrated_model``, a
    path) into ``download_dir``; its artifact folder and scoring settings."""
    mlflow = connect(cfg)
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(download_dir)))
    except MlflowException as exc:
        raise LookupError(f"model {model_uri} not found in the MLflow store {tracking_uri(cfg)}: "
                          f"{exc.message.splitlines()[0]}") from None
    artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts") or {}
    if MODEL_ARTIFACT not in artifacts or SCORING_ARTIFACT not in artifacts:
        raise ValueError(f"{model_uri} is not a CAMoE model (its pyfunc has no '{MODEL_ARTIFACT}' and "
                         f"'{SCORING_ARTIFACT}' artifacts)")
    return ResolvedModel(local / artifacts[MODEL_ARTIFACT]["path"],
                         Scoring.from_json((local / artifacts[SCORING_ARTIFACT]["path"]).read_text()))


if __name__ == "__main__":      # `python -m training.tracking [--conf-dir DIR] [--set k=v]`: the store's URI
    import argparse

    from core.config import load_config

    parser = argparse.ArgumentParser(description="print the MLflow tracking URI the jobs use")
    parser.add_argument("--conf-dir")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.conf_dir, overrides=args.set)
    if tracking_uri(config).startswith("sqlite:///"):
        mlflow_dir(config).mkdir(parents=True, exist_ok=True)
    print(tracking_uri(config))
