"""Fixtures for both suites: a test lake's paths and configs pointing at it (no SparkSession here:
tests/integration/conftest.py holds it), the JVM options every test JVM gets (and, when
integration tests run, a class-data-sharing archive built in the background), and how
`make test` spreads the suite over two pytest-xdist workers."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from core.config import load_config
from tests.jvm_options import TEST_JVM_OPTIONS
from tests.submit import SPARK_SUBMIT, python_env, spark_submit_flags

os.environ.setdefault("SPARK_SUBMIT_OPTS", TEST_JVM_OPTIONS)
ROOT = Path(__file__).resolve().parents[1]
ARCHIVE_SWITCH = "CAMOE_TEST_JVM_ARCHIVE"          # "off": no class-data-sharing archive


def _runs_integration_tests(config) -> bool:
    integration = ROOT / "tests" / "integration"
    paths = [Path(a.split("::", 1)[0]).resolve() for a in config.args] or [ROOT / "tests"]
    return any(integration.is_relative_to(p) or p.is_relative_to(integration) for p in paths)


class ClassArchive:
    """A class-data-sharing archive of the classes a test job's JVM loads, made in the background
    by tests/spark_class_archive.py under -XX:ArchiveClassesAtExit while the first tests run.

    The tests' spark-submits name it from the start: a JVM started before it exists (or if it
    could not be made) runs as without it, silently. It is written under another name and renamed
    when whole, since a JVM mapping a half-written archive dies of SIGBUS. Measured here: a
    spark-submit's session starts in 9 s of CPU instead of 18; a generate_logs spark-submit ran
    in 21 s instead of 30 (77bc141; tests/README.md, what brought the test time down)."""

    def __init__(self, folder: Path):
        self.folder, self.path = folder, folder / "spark-classes.jsa"
        self.partial, self.lake = folder / "spark-classes.jsa.partial", folder / "lake"
        self.process: subprocess.Popen | None = None
        self.thread = threading.Thread(target=self._build, name="jvm-class-archive", daemon=True)

    def start(self) -> ClassArchive:
        self.thread.start()
        return self

    def _build(self) -> None:
        sets = [f"--set=storage.warehouse_dir={self.lake}/warehouse",
                f"--set=storage.metastore_dir={self.lake}/metastore",
                f"--set=storage.artifacts_dir={self.lake}/artifacts", "--set=spark.master=local[1]",
                "--set=spark.shuffle_partitions=2"]
        env = {**python_env(),
               "SPARK_SUBMIT_OPTS": f"{TEST_JVM_OPTIONS} -XX:ArchiveClassesAtExit={self.partial} -Xlog:cds*=off"}
        try:
            flags = spark_submit_flags(sets, env)
            script = ROOT / "tests" / "spark_class_archive.py"
            self.process = subprocess.Popen([str(SPARK_SUBMIT), *flags, str(script), *sets], cwd=self.folder,
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self.process.wait(timeout=900) == 0 and self.partial.is_file():
                self.partial.rename(self.path)
        except (OSError, subprocess.SubprocessError):
            pass                  # the tests run without it, as they would on a JVM that cannot map it
        finally:
            shutil.rmtree(self.lake, ignore_errors=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.thread.join(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def pytest_configure(config):
    """Start the class archive once, before xdist starts its workers (they inherit the
    environment), when integration tests will run and the archive is not switched off."""
    if hasattr(config, "workerinput") or os.environ.get(ARCHIVE_SWITCH) == "off" \
            or "SharedArchiveFile" in os.environ["SPARK_SUBMIT_OPTS"] or not _runs_integration_tests(config):
        return
    archive = ClassArchive(Path(tempfile.mkdtemp(prefix="camoe-jvm-archive-"))).start()
    config.add_cleanup(archive.stop)
    os.environ["SPARK_SUBMIT_OPTS"] += f" -XX:SharedArchiveFile={archive.path} -Xlog:cds*=off"


# Two test workers share two cores: torch's second intra-op thread would spin between the small
# ops of a test's training at the other worker's expense (training.loop.threads_per_process).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# `make test` runs two pytest-xdist workers, each taking one test file at a time (its module
# fixtures built once), except that the files reading the session's shared evaluation lake go to
# one worker together (the lake and its trained models are built once). Files start longest first
# (durations of the last clean-clone run) so the two workers finish together; the rest follow in
# collection order, but a test marked rebuilds_shared_lake runs after every other one of its group.
SHARED_LAKE_FIXTURES = ("eval_lake", "experiment")
SHARED_LAKE_FILES = ("test_training", "test_evaluate", "test_inference", "test_mlflow")
LONGEST_FIRST = ("test_kill", "test_dag", "test_cluster", "shared-eval-lake", "test_own_log", "test_movielens",
                 "test_coverage", "test_package", "test_features", "test_data", "test_bad_input", "test_quality")


def _scope(test_file: str) -> str:
    stem = Path(test_file).stem
    return "shared-eval-lake" if stem in SHARED_LAKE_FILES else stem


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        """xdist's loadfile with the shared-lake files as one unit. (``--dist loadgroup`` with
        xdist_group marks set up module fixtures once per test: measured, pytest-xdist 3.8.)"""

        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid.split("::", 1)[0])

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    strays = sorted({item.path.name for item in items if set(SHARED_LAKE_FIXTURES) & set(item.fixturenames)
                     and item.path.stem not in SHARED_LAKE_FILES})
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use(s) the shared evaluation lake: add to SHARED_LAKE_FILES "
                                "in tests/conftest.py so one worker builds it once")
    rank = {scope: i for i, scope in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (rank.get(_scope(str(item.path)), len(rank)),        # stable: file order kept
                                 item.get_closest_marker("rebuilds_shared_lake") is not None))


@pytest.fixture(scope="session")
def lake(tmp_path_factory):
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def base_overrides(lake):
    return [f"storage.warehouse_dir={lake}/warehouse", f"storage.metastore_dir={lake}/metastore",
            f"storage.artifacts_dir={lake}/artifacts", "spark.master=local[2]",
            "spark.shuffle_partitions=4"]


@pytest.fixture(scope="session")
def make_config(base_overrides):
    """Config with the test lake's paths; ``database`` isolates each test's tables."""
    def make(*overrides: str, database: str = "camoe_test", extra_files=(), conf_dir=None):
        return load_config(conf_dir, extra_files=extra_files,
                           overrides=[*base_overrides, f"database={database}", *overrides])
    return make
