"""The exit-code contract (README, "Exit codes"; the DAG retries neither 2 nor 3): every job,
given a bad value of any of its flags, exits 2 with one line naming the flag, the value and
what is allowed, before Spark starts (no JVM here: starting Spark fails the test)."""
from __future__ import annotations

import argparse
import importlib

import pytest

import jobs._cli as cli_module

JOBS = ("generate_logs", "ingest", "build_features", "validate", "train", "calibrate_evaluate", "score",
        "experiments", "replay_auction", "summarize", "maintain", "pipeline")

# every job: (flags, what the one line must say)
COMMON = {
    "--conf-dir": (["--conf-dir", "/nonexistent"], "config folder /nonexistent does not exist"),
    "--conf": (["--conf", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
    "--set": (["--set", "training.epochs=abc"], "'training.epochs' must be a positive integer, got 'abc'"),
    "--run-id": (["--run-id", "it's mine"], "argument --run-id: \"it's mine\" is not a run id"),
}
DATES = {
    "--start-date": (["--start-date", "2026-13-01"], "argument --start-date: '2026-13-01' is not a date"),
    "--end-date": (["--start-date", "2026-01-05", "--end-date", "2026-01-04"],
                   "--end-date 2026-01-04 is before --start-date 2026-01-05"),
}
# a training window's flags (train, experiments): the end date and the days of each split
WINDOW = {
    "--end-date": (["--end-date", "2026-02-30"], "argument --end-date: '2026-02-30' is not a date"),
    "--train-days": (["--train-days", "0"], "argument --train-days: '0' is not a positive integer"),
    "--validation-days": (["--validation-days", "-1"], "argument --validation-days: '-1' is not a positive integer"),
    "--test-days": (["--test-days", "one"], "argument --test-days: 'one' is not an integer"),
}
BAD_FLAGS = {
    "generate_logs": {
        "--start-date": DATES["--start-date"],
        "--days": (["--days", "0"], "argument --days: '0' is not a positive integer"),
        "--rows-per-day": (["--rows-per-day", "-5"], "argument --rows-per-day: '-5' is not a positive integer"),
        "--seed": (["--seed", "seven"], "argument --seed: 'seven' is not an integer"),
        "--burn-in-days": (["--burn-in-days", "-1"], "argument --burn-in-days: '-1' is not an integer >= 0"),
        "--table": (["--table", "raw-logs"], "argument --table: 'raw-logs' is not a table name"),
    },
    "ingest": {
        "--source": (["--format", "csv"], "--source and --format are required"),
        "--format": (["--source", "/logs", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        "--option": (["--source", "/logs", "--format", "csv", "--option", "sep"],
                     "--option 'sep' must look like KEY=VALUE"),
        "--start-date": DATES["--start-date"],
        "--end-date": (["--source", "/logs", "--format", "csv", *DATES["--end-date"][0]], DATES["--end-date"][1]),
    },
    "build_features": DATES,
    "validate": DATES,
    "train": {
        "--model": (["--model", "camoe2"], "--model 'camoe2' is not a model of conf/models.yaml; choose from"),
        "--grouping": (["--grouping", "by_genre"], "--grouping 'by_genre' is not a grouping of conf/slots.yaml"),
        "--features-version": (["--features-version", "-1"],
                               "argument --features-version: '-1' is not an integer >= 0"),
        "--num-proc": (["--num-proc", "0"], "argument --num-proc: '0' is not a positive integer"),
        "--backend": (["--backend", "mpi"], "argument --backend: invalid choice: 'mpi'"),
        "--epochs": (["--epochs", "two"], "argument --epochs: 'two' is not an integer"),
        **WINDOW,
    },
    "calibrate_evaluate": {
        "--train-run-id": (["--train-run-id", "x' OR '1'='1"], "argument --train-run-id: "),
        "--baseline-run-id": (["--baseline-run-id", ""], "argument --baseline-run-id: '' is not a run id"),
    },
    "score": {
        "--train-run-id": (["--train-run-id", "a b"], "argument --train-run-id: 'a b' is not a run id"),
        "--model-uri": (["--train-run-id", "train-1", "--model-uri", "models:/camoe@champion"],
                        "--model-uri / --train-run-id: give a model URI (models:/camoe@champion) or a training run id "
                        "(train-1), not both"),
        "--candidates": (["--candidates", "a.b.c"], "argument --candidates: 'a.b.c' is not a table name"),
        "--split": (["--split", "holdout"], "argument --split: invalid choice: 'holdout'"),
        "--start-date": DATES["--start-date"],
        "--end-date": DATES["--end-date"],
    },
    "experiments": {
        "--models": (["--models", "wide_deep", "camoe2"],
                     "--models wide_deep camoe2: 'camoe2' is not a model of conf/models.yaml"),
        "--features-version": (["--features-version", "v3"], "argument --features-version: 'v3' is not an integer"),
        "--report": None,                       # any path: the job makes its folder
        "--reanalyse": (["--reanalyse", "no such run"], "argument --reanalyse: 'no such run' is not a run id"),
        "--sampling-ablation": (["--models", "wide_deep", "dcnv2", "--sampling-ablation"],
                                "--sampling-ablation: the sampling ablation retrains experiments.target_model camoe: "
                                "add it to the models"),
        **WINDOW,
        "--train-days": (["--reanalyse", "exp1", "--train-days", "3"],
                         "--train-days: --reanalyse trains nothing; its window is the one experiment exp1 trained on"),
    },
    "replay_auction": {
        "--models": (["--models", "camoe", "camoe"], "--models camoe camoe: name two different models"),
        "--prediction-runs": (["--prediction-runs", "run-a", "run b"], "argument --prediction-runs: 'run b'"),
    },
    "summarize": DATES,
    "maintain": {
        "--tables": (["--tables", "features,nope"], "--tables: unknown table(s) nope; platform tables:"),
        "--training-set-retention-days": (["--training-set-retention-days", "-1"],
                                          "argument --training-set-retention-days: '-1' is not an integer >= 0"),
    },
    "pipeline": {
        "--steps": (["--steps", "build_features,summarise"], "--steps: unknown job(s) summarise"),
        "--step-args": (["--step-args", "train=--model camoe2"],
                        "train: usage error: --model 'camoe2' is not a model of conf/models.yaml"),
    },
}
FLAGS_WITHOUT_VALUES = {"--help", "--quick", "--show-sql", "--drop-old-layout", "--short-history", "--history-only",
                        "--missing-days"}
CASES = [(job, flag, *case) for job in JOBS for flag, case in {**COMMON, **BAD_FLAGS[job]}.items()
         if case is not None]


@pytest.fixture(autouse=True)
def no_spark(monkeypatch):
    def refuse(job, cfg):
        raise AssertionError(f"{job} started Spark: its flags were not checked before")
    monkeypatch.setattr(cli_module, "start_spark", refuse)
    import jobs.pipeline
    monkeypatch.setattr(jobs.pipeline, "start_spark", refuse)


def _exit_code(job: str, argv: list[str]) -> int:
    try:
        return importlib.import_module(f"jobs.{job}").cli(argv)
    except SystemExit as exc:            # argparse's own errors exit from inside parse_args
        return exc.code


@pytest.mark.parametrize(("job", "flag", "argv", "message"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_a_bad_flag_value_exits_2_with_one_line_naming_it_before_spark_starts(job, flag, argv, message, capsys):
    code = _exit_code(job, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "usage error" in lines[0] or "configuration error" in lines[0], err


def _parser_flags(job: str) -> set[str]:
    module = importlib.import_module(f"jobs.{job}")
    parser = cli_module.job_parser(job, module.__doc__, module.add_arguments)
    return {option for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings if option.startswith("--")}


@pytest.mark.parametrize("job", JOBS)
def test_every_flag_of_every_job_has_a_bad_value_case(job):
    """A flag added to a job without a case here fails this test."""
    covered = set(COMMON) | set(BAD_FLAGS[job])
    assert _parser_flags(job) - FLAGS_WITHOUT_VALUES == covered


def test_the_dag_does_not_retry_exactly_the_usage_and_quality_gate_codes():
    """The DAG cannot import the jobs (Airflow lives in its own environment): its copy of the
    codes is read from its source."""
    import ast

    from core.config import PROJECT_ROOT

    tree = ast.parse((PROJECT_ROOT / "dags" / "camoe_daily.py").read_text())
    not_retried = next(ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                       and any(getattr(t, "id", None) == "NOT_RETRIED" for t in node.targets))
    assert set(not_retried) == {cli_module.EXIT_USAGE, cli_module.EXIT_QUALITY_GATE} == {2, 3}
