"""The embedded metastore's lock is read as Derby holds it: a POSIX lock on dbex.lck; Hive's session
folder lives beside the metastore."""
from __future__ import annotations

import subprocess
import sys

from core.session import _derby_locked_elsewhere

HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "r+b")
fcntl.lockf(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_metastore_is_busy_exactly_while_another_process_holds_derbys_lock(tmp_path):
    lock = tmp_path / "metastore_db" / "dbex.lck"
    assert not _derby_locked_elsewhere(tmp_path)                  # never opened
    lock.parent.mkdir()
    lock.write_bytes(b"")
    assert not _derby_locked_elsewhere(tmp_path)                  # left behind by a killed driver
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _derby_locked_elsewhere(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert not _derby_locked_elsewhere(tmp_path)


def test_hives_session_resource_folder_is_beside_the_metastore_not_one_per_driver_in_tmp(spark, make_config):
    """Hive's session makes ``hive.downloaded.resources.dir`` when the driver first reaches the
    metastore; its default, ``<java.io.tmpdir>/<session uuid>_resources``, was left behind by
    every driver (Spark never closes Hive's session)."""
    folder = make_config().storage.metastore_dir / "hive-resources"
    assert spark.sparkContext._jsc.hadoopConfiguration().get("hive.downloaded.resources.dir") == str(folder)
    assert folder.is_dir()                                  # made by Hive, so Hive read the setting
