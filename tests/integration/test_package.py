"""What a cluster gets: `make package`'s dist/ used alone, from another directory, by an isolated
Python and spark-submit (the jobs' command lines: tests/unit/test_package.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOBS = sorted(p for p in (ROOT / "jobs").glob("*.py") if not p.name.startswith("_"))


def _isolated_python(tmp_path: Path) -> Path:
    """A venv that sees the project venv's dependencies but not the project itself.

    The project venv has the platform installed in editable mode, which would hide a
    --py-files zip that lacks a module. A '.pth' line adds a folder to sys.path without
    running that folder's own .pth files, so the editable finder is not installed here."""
    venv = tmp_path / "py"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    deps = next((BIN.parent / "lib").glob("python3.*/site-packages"))
    (site / "camoe_deps.pth").write_text(f"{deps}\n")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_packaged_jobs_run_from_dist_alone_in_another_directory(tmp_path):
    dist = tmp_path / "dist"
    made = subprocess.run(["make", "package", f"DIST={dist}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    assert len(list(dist.glob("camoe-*-py3-none-any.whl"))) == 1
    assert {p.name for p in (dist / "conf").glob("*.yaml")} == {p.name for p in (ROOT / "conf").glob("*.yaml")}
    assert {p.name for p in (dist / "jobs").glob("*.py")} == {p.name for p in JOBS}
    bundle = dist / "camoe-jobs.zip"
    names = set(zipfile.ZipFile(bundle).namelist())
    sources = {str(p.relative_to(ROOT)) for pkg in ("core", "features", "training", "calibration", "serving", "jobs")
               for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names, f"missing from the zip: {sorted(sources - names)}"

    python = _isolated_python(tmp_path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python),
           "SPARK_HOME": str(next((BIN.parent / "lib").glob("python3.*/site-packages/pyspark")))}
    env.pop("PYTHONPATH", None)
    env.pop("CAMOE_CONF_DIR", None)
    absent = subprocess.run([str(python), "-c", "import features"], env=env, cwd=cwd, capture_output=True, text=True)
    assert "No module named 'features'" in absent.stderr, "the isolated python still sees the checkout"

    # every module of the zip imports from the zip alone (job modules import the rest lazily)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py"))
    imported = subprocess.run(
        [str(python), "-c", "import importlib, sys\nfor m in sys.argv[1:]:\n    mod = importlib.import_module(m)\n"
         "    assert '.zip' in mod.__file__, (m, mod.__file__)\nprint('imported', len(sys.argv) - 1)", *modules],
        env={**env, "PYTHONPATH": str(bundle)}, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]

    for script in sorted((dist / "jobs").glob("*.py")):
        helped = subprocess.run([str(python), str(script), "--help"], env={**env, "PYTHONPATH": str(bundle)},
                                cwd=cwd, capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0 and "--conf-dir" in helped.stdout, (script.name, helped.stderr[-2000:])

    # spark-submit from another directory with relative paths into dist/ only; storage paths in
    # dist/conf are relative, so the tables land beside it (dist/warehouse, dist/metastore)
    sets = ["--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=4",
            "--set", "generator.days=5", "--set", "generator.rows_per_day=3000"]
    flags = subprocess.run([str(python), "-m", "core.session", "--conf-dir", "../dist/conf", *sets],
                           env={**env, "PYTHONPATH": "../dist/camoe-jobs.zip"}, cwd=cwd, capture_output=True,
                           text=True, timeout=120)
    assert flags.returncode == 0, flags.stderr[-2000:]
    assert f"spark.sql.warehouse.dir={dist / 'warehouse'}" in flags.stdout
    submit = [str(BIN / "spark-submit"), *flags.stdout.split(), "--driver-memory", "1g",
              "--py-files", "../dist/camoe-jobs.zip"]
    # three jobs in one driver (jobs/pipeline.py, importing them from the zip: a JVM start each
    # saved), the last failing: summarize on a database of its own, which no job wrote. A failing
    # job is one readable line, and the pipeline's exit code is its (1)
    done = subprocess.run([*submit, "../dist/jobs/pipeline.py", "--conf-dir", "../dist/conf", *sets,
                           "--steps", "generate_logs,build_features,summarize",
                           "--step-args", "summarize=--set database=camoe_empty"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr          # (spark-submit's PythonRunner merges the driver's stderr
    assert done.returncode == 1, log[-3000:]  # into its own stdout)
    for job in ("generate_logs", "build_features"):
        assert re.search(rf"{job}: run {job}-\S+ finished in", log), log[-3000:]
    assert "15000 input rows, 15000 accepted, 0 quarantined" in log
    assert (dist / "warehouse" / "camoe.db" / "features" / "_delta_log").is_dir()
    assert (dist / "metastore" / "metastore_db").is_dir()
    assert not (cwd / "warehouse").exists() and not (cwd / "spark-warehouse").exists()
    assert "summarize: FAILED (TableNotFound): table camoe_empty.features does not exist: run build_features first" \
        in log, log[-3000:]
    assert "pipeline: stopped at summarize (exit 1)" in log
    assert "TABLE_OR_VIEW_NOT_FOUND" not in log and "Traceback" not in log, log[-3000:]
