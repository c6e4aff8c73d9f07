"""Jobs are quiet by default: Spark logs warnings only (conf/log4j2.properties), Ivy's report is
not printed for make's jobs, and the project's own INFO lines read ``HH:MM:SS job: message``."""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.session import SPARK_LOG_ENV, spark_conf, spark_submit_args
from core.spark_jars import package_jars

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_driver_and_executors_read_the_projects_log4j_file(monkeypatch):
    monkeypatch.delenv(SPARK_LOG_ENV, raising=False)
    conf = spark_conf(load_config())
    option = f"-Dlog4j2.configurationFile={(ROOT / 'conf' / 'log4j2.properties').as_uri()}"
    assert conf["spark.driver.defaultJavaOptions"] == option
    assert conf["spark.executor.extraJavaOptions"] == option
    assert conf["spark.driver.extraJavaOptions"].startswith("-Dderby.system.home=")
    assert not any(k.startswith("spark.executorEnv.") for k in conf)


def test_spark_log_level_flag_reaches_executors_and_refuses_unknown_levels(monkeypatch):
    monkeypatch.setenv(SPARK_LOG_ENV, "INFO")
    assert spark_conf(load_config())[f"spark.executorEnv.{SPARK_LOG_ENV}"] == "info"
    monkeypatch.setenv(SPARK_LOG_ENV, "loud")
    with pytest.raises(ValueError, match="CAMOE_SPARK_LOG='loud' is not a log4j level"):
        spark_conf(load_config())


def test_every_spark_submit_flag_is_one_shell_word():
    # the Makefile ($(...)), the DAG and the tests split the flags on whitespace
    assert all(not re.search(r"\s", arg) for arg in spark_submit_args(load_config()))


def test_local_jars_come_from_a_cached_resolution_when_its_files_exist(tmp_path, monkeypatch):
    import core.spark_jars as spark_jars

    cfg = load_config()
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for jar in jars:
        jar.write_bytes(b"")
    calls = []
    monkeypatch.setattr(spark_jars, "_resolve_packages", lambda ivy: calls.append(ivy) or [str(j) for j in jars])
    assert package_jars(cfg, cache_dir=tmp_path) == [str(j) for j in jars]     # resolved, then cached
    assert package_jars(cfg, cache_dir=tmp_path) == [str(j) for j in jars]
    assert len(calls) == 1
    jars[0].unlink()                                                           # a jar went missing
    monkeypatch.setattr(spark_jars, "_resolve_packages", lambda ivy: None)
    assert package_jars(cfg, cache_dir=tmp_path) is None                       # -> --packages again


def test_job_log_lines_name_the_job_and_hide_other_libraries_info(capsys):
    from jobs._cli import log, setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("score")
        log.info("scored %d rows", 3)
        logging.getLogger("features.pipeline").info("step 1")
        logging.getLogger("great_expectations.registry").info("noise")
        logging.getLogger("great_expectations").setLevel(logging.INFO)      # as GX does on import
        logging.getLogger("great_expectations.data_context").info("Created temporary directory")
        logging.info("Exception while sending command.")       # py4j's retried send, on the root logger
        logging.getLogger("horovod").warning("real warning")
    finally:
        root.handlers[:], root.level = saved
        logging.getLogger("great_expectations").setLevel(logging.NOTSET)
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", ln) for ln in lines] == [
        "score: scored 3 rows", "score: step 1", "WARNING horovod: real warning"]




def test_epoch_progress_line_reports_throughput_loss_metric_and_time_left():
    from training.loop import progress_line

    line = progress_line(1, 8, 41234.4, 0.061234, "log_loss", 0.0581, True, 30.0, 2, False)
    assert line == ("epoch 2/8: 41,234 examples/s, train loss 0.06123, validation log_loss 0.05810 (best), "
                    "elapsed 30s, left ~1m30s")
    assert progress_line(3, 8, 1.0, 0.1, "log_loss", 0.2, False, 40.0, 4, True).endswith("left ~0s; stopping early")
