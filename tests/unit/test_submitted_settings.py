"""Which of spark-submit's settings and the conf's a job's session gets (no JVM: the merge is
a pure function; tests/integration/test_cluster.py checks a real spark-submit's log line)."""
from __future__ import annotations

from core.config import load_config
from core.session import PLATFORM_SETTINGS, merge_submitted, spark_conf


def test_a_submitted_tuning_setting_wins_and_is_named():
    conf = spark_conf(load_config())
    merged, differences = merge_submitted(conf, {"spark.sql.shuffle.partitions": "400", "spark.driver.memory": "1g",
                                                 "spark.executor.cores": "8"})
    assert merged["spark.sql.shuffle.partitions"] == "400" and merged["spark.driver.memory"] == "1g"
    assert "spark.executor.cores" not in merged            # spark-submit's alone: already set, left to it
    assert {d.key for d in differences} == {"spark.sql.shuffle.partitions", "spark.driver.memory"}
    assert all(d.applies for d in differences)
    line = next(d.describe() for d in differences if d.key == "spark.sql.shuffle.partitions")
    assert "spark.sql.shuffle.partitions=400 applies" in line and conf["spark.sql.shuffle.partitions"] in line


def test_the_conf_keeps_the_settings_the_tables_depend_on_and_says_which_it_ignored():
    conf = spark_conf(load_config())
    submitted = {key: "/elsewhere" for key in PLATFORM_SETTINGS}
    merged, differences = merge_submitted(conf, submitted)
    assert all(merged[key] == conf[key] for key in PLATFORM_SETTINGS)
    assert sorted(d.key for d in differences) == sorted(PLATFORM_SETTINGS)
    warehouse = next(d for d in differences if d.key == "spark.sql.warehouse.dir")
    assert not warehouse.applies
    assert "spark.sql.warehouse.dir=/elsewhere is not used" in warehouse.describe()
    assert conf["spark.sql.warehouse.dir"] in warehouse.describe()


def test_flags_printed_by_core_session_for_the_same_conf_change_nothing():
    conf = spark_conf(load_config())
    merged, differences = merge_submitted(conf, dict(conf))
    assert merged == conf and differences == []
