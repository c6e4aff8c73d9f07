"""Real faults, survived or named: a data file of the pinned features version deleted or cut short."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from features import tables
from tests.helpers import built_lake
from training.runner import prepare


def _local(url: str) -> str:
    from urllib.parse import unquote, urlparse
    return unquote(urlparse(url).path)


def test_a_missing_or_truncated_file_of_the_pinned_version_is_named_before_training(spark, fresh_db):
    cfg = fresh_db("training.batch_size=256")
    built_lake(spark, cfg, dt.date(2026, 1, 1), 4, 600, "faults-build")
    name = cfg.table(tables.FEATURES)
    version = tables.latest_version(spark, name)
    files = tables.table_files(spark, name, version).files
    job, meta = prepare(spark, cfg, "faults-ok", features_version=version, num_proc=1, backend="local")
    assert meta["features_version"] == version          # intact: the run is planned

    cut, gone = _local(files[0]), _local(files[-1])
    with open(cut, "r+b") as handle:                    # a copy cut short: the footer is lost
        handle.truncate(os.path.getsize(cut) // 2)
    with pytest.raises(tables.DataFileError, match=rf"{name} version {version}: data file \S*{os.path.basename(cut)}"
                                                   r" is not a complete Parquet file"):
        prepare(spark, cfg, "faults-cut", features_version=version, num_proc=1, backend="local")
    os.remove(cut)
    os.remove(gone)
    with pytest.raises(tables.DataFileError, match=rf"data file \S*{os.path.basename(files[0])} is missing"):
        prepare(spark, cfg, "faults-gone", features_version=version, num_proc=1, backend="local")
