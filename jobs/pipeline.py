"""Run the pipeline's jobs in order in one Spark driver: generate_logs, build_features, validate,
summarize, train, calibrate_evaluate, score.

Each step is the job of the same name, with the same flags and its own row in the runs table,
as if it had been spark-submitted alone; one driver saves each later step the JVM start, the
metastore connection and the Delta log replays (25-35 s a step on 2 cores). Airflow runs the
steps as separate tasks (dags/camoe_daily.py), so that each retries on its own; this job is for
a whole run by hand (``make demo``) or a test. The first step that fails stops the run, with
its exit code (3: the quality gate). With --run-id R each step records run id R-<job>, as the
DAG's tasks do (a step's own --run-id in --step-args wins). A step's own --set applies to it
alone; a database it names is made when the session starts, as a job's own is.

    spark-submit jobs/pipeline.py
    spark-submit jobs/pipeline.py --steps generate_logs,build_features --set generator.days=3
    spark-submit jobs/pipeline.py --step-args "train=--epochs 2 --num-proc 2 --backend horovod"
    spark-submit jobs/pipeline.py --conf-dir my_conf \
        --steps ingest,build_features,validate,train,calibrate_evaluate,score \
        --step-args "ingest=--source /data/ad_logs --format parquet"
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.config import ConfigError
from core.session import open_databases
from jobs._cli import EXIT_USAGE, job_parser, load_job_config, run_recorded, setup_logging, start_spark

STEPS = ("generate_logs", "build_features", "validate", "summarize", "train", "calibrate_evaluate", "score")
# on a team's own log, ingest takes generate_logs' place: --steps ingest,build_features,...
OPTIONAL_STEPS = ("ingest",)


@dataclass(frozen=True)
class Step:
    """One job of the pipeline: its name, its parsed flags, its ``run``."""
    job: str
    args: argparse.Namespace
    run: Callable
    check: Callable | None = None      # the job's check_args: its flags' values against the conf


def add_arguments(parser) -> None:
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated jobs to run, in this order (default: all of {','.join(STEPS)}; "
                             f"also: {','.join(OPTIONAL_STEPS)})")
    parser.add_argument("--step-args", action="append", default=[], metavar="JOB=FLAGS",
                        help="extra flags for one job, e.g. \"train=--epochs 2 --backend local\" (repeatable; "
                             "its spark.* settings do not apply: the one session is started with the pipeline's)")


def plan_steps(args: argparse.Namespace) -> list[Step]:
    """Parse every step's flags before anything runs, so a typo fails the run at once: the
    pipeline's --conf-dir/--conf/--set go to every step, --step-args to its own."""
    names = [n.strip() for n in args.steps.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS + OPTIONAL_STEPS]
    if unknown or not names:
        raise ValueError(f"--steps: unknown job(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(STEPS + OPTIONAL_STEPS)}")
    extra: dict[str, list[str]] = {}
    for item in args.step_args:
        job, sep, flags = item.partition("=")
        if not sep or job not in names:
            raise ValueError(f"--step-args {item!r}: expected JOB=FLAGS with JOB one of {', '.join(names)}")
        extra[job] = extra.get(job, []) + shlex.split(flags)
    common = ([f"--conf-dir={args.conf_dir}"] if args.conf_dir else []) \
        + [f"--conf={f}" for f in args.conf] + [f"--set={s}" for s in args.set]
    steps = []
    for job in names:
        module = importlib.import_module(f"jobs.{job}")
        parser = job_parser(job, module.__doc__, module.add_arguments)
        step_args = parser.parse_args(common + extra.get(job, []))
        if args.run_id and not step_args.run_id:
            step_args.run_id = f"{args.run_id}-{job}"      # the DAG's task run ids look the same
        steps.append(Step(job, step_args, module.run, getattr(module, "check_args", None)))
    return steps


def main(argv: list[str] | None = None) -> int:
    args = job_parser("pipeline", __doc__, add_arguments).parse_args(argv)
    setup_logging("pipeline")
    try:
        steps = plan_steps(args)
    except ValueError as exc:
        print(f"pipeline: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:       # a step's flags: argparse has printed the error, naming the job
        return exc.code

    cfg = load_job_config("pipeline", args)
    if cfg is None:
        return EXIT_USAGE
    # each step's config (its own --conf/--set apply to it alone), all checked before Spark starts
    step_cfgs = [load_job_config(step.job, step.args, step.check) for step in steps]
    if any(c is None for c in step_cfgs):
        return EXIT_USAGE
    spark, code = start_spark("pipeline", cfg)
    if spark is None:
        return code
    try:                               # a step's own --set database=...: made as a job's own is
        open_databases(spark, cfg, step_cfgs)
    except ConfigError as exc:
        print(f"pipeline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.time()
    for step, step_cfg in zip(steps, step_cfgs):
        print(f"==> {step.job}", flush=True)
        setup_logging(step.job)
        code = run_recorded(spark, step_cfg, step.job, step.run, step.args)
        if code != 0:
            print(f"pipeline: stopped at {step.job} (exit {code}); the steps before it are recorded",
                  file=sys.stderr)
            return code
    setup_logging("pipeline")
    print(f"pipeline: {len(steps)} steps in {time.time() - started:.0f}s", flush=True)
    return 0


cli = main          # every job module's entry: cli(argv) -> exit code


if __name__ == "__main__":
    sys.exit(cli())
