"""The MLflow settings' validation and how params and metrics are flattened for MLflow (the
real store and registry: tests/integration/test_mlflow.py)."""
from __future__ import annotations

import pytest

from core.config import ConfigError
from training import tracking


def test_mlflow_settings_are_validated_with_the_key_and_file(make_config):
    cfg = make_config()
    assert (cfg.mlflow.enabled, cfg.mlflow.experiment, cfg.mlflow.registered_model, cfg.mlflow.alias) == \
        (True, "camoe", "camoe", "champion")
    for value, expect in (("v2", "not 'latest' or a version"), ("latest", "not 'latest'"), ("'a b'", "got 'a b'")):
        with pytest.raises(ConfigError, match=rf"base.yaml.*'mlflow.alias' must be an alias name.*{expect}"):
            make_config(f"mlflow.alias={value}")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'mlflow.uri'"):
        make_config("mlflow.uri=sqlite:///x.db")


def test_params_and_metrics_flatten_as_mlflow_takes_them():
    assert tracking.flat_params({"model": {"expert_hidden": (128, 64), "alm": True}, "workers": 2}) == \
        {"model.expert_hidden": "[128, 64]", "model.alm": "True", "workers": "2"}
    assert tracking.epoch_metrics([{"epoch": 0, "log_loss": 0.5, "stopped": True, "auc_pr": float("nan")},
                                   {"epoch": 1, "log_loss": 0.4, "note": "x"}]) == \
        [(0, {"log_loss": 0.5}), (1, {"log_loss": 0.4})]
    rows = [{"level": "all", "slot": "all", "calibrated": True, "auc_pr": 0.1, "log_loss": None},
            {"level": "slot", "slot": "podcast", "calibrated": True, "auc_pr": 0.2},
            {"level": "task", "slot": "audio", "calibrated": True, "auc_pr": 0.3},
            {"level": "slot", "slot": "podcast", "calibrated": False, "auc_pr": 0.9}]
    assert tracking.evaluation_metrics(rows, metrics=("auc_pr", "log_loss")) == \
        {"test_auc_pr": 0.1, "test_auc_pr.podcast": 0.2, "test_auc_pr.task.audio": 0.3}


