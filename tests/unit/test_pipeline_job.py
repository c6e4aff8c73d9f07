"""jobs/pipeline.py plans its steps before Spark starts: each step gets the pipeline's config
flags plus its own, and a wrong step name or flag fails the run at once (no JVM here; the run
itself is tests/test_pipeline_e2e.py)."""
from __future__ import annotations

import pytest

from jobs import pipeline
from jobs._cli import job_parser


def _plan(*argv: str) -> list[pipeline.Step]:
    return pipeline.plan_steps(job_parser("pipeline", "", pipeline.add_arguments).parse_args(list(argv)))


def test_every_step_by_default_in_pipeline_order_with_the_shared_config_flags():
    steps = _plan("--set", "generator.days=3", "--conf", "team.yaml")
    assert [s.job for s in steps] == list(pipeline.STEPS)
    assert all(s.args.set == ["generator.days=3"] and s.args.conf == ["team.yaml"] for s in steps)
    train = next(s for s in steps if s.job == "train")
    assert train.args.epochs is None and train.run.__module__ == "jobs.train"


def test_step_args_reach_only_their_step_and_may_add_config_overrides():
    steps = _plan("--steps", "build_features,train", "--set", "spark.shuffle_partitions=4",
                  "--step-args", "train=--epochs 2 --backend local --set=training.batch_size=512",
                  "--step-args", "build_features=--start-date 2026-01-03")
    build, train = steps
    assert (train.args.epochs, train.args.backend) == (2, "local")
    assert train.args.set == ["spark.shuffle_partitions=4", "training.batch_size=512"]
    assert str(build.args.start_date) == "2026-01-03" and build.args.set == ["spark.shuffle_partitions=4"]


def test_a_pipeline_run_id_names_each_steps_run_as_the_dag_does():
    steps = _plan("--steps", "validate,train", "--run-id", "daily-2026-01-10",
                  "--step-args", "train=--run-id train-resumed")
    assert [s.args.run_id for s in steps] == ["daily-2026-01-10-validate", "train-resumed"]
    assert _plan("--steps", "validate")[0].args.run_id is None        # generated when it records


@pytest.mark.parametrize("argv, message", [
    (["--steps", "generate_logs,trian"], "unknown job(s) trian"),
    (["--steps", ","], "unknown job(s) (none given)"),
    (["--steps", "train", "--step-args", "score=--split test"], "JOB one of train"),
    (["--step-args", "train --epochs 2"], "expected JOB=FLAGS"),
])
def test_a_wrong_step_is_named_before_spark_starts(argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _plan(*argv)


def test_a_wrong_flag_of_one_step_exits_2_naming_that_job(capsys):
    assert pipeline.main(["--step-args", "train=--epochs two"]) == 2
    assert "train: usage error: argument --epochs: 'two' is not an integer" in capsys.readouterr().err
    assert pipeline.main(["--steps", "summarise"]) == 2
    assert "pipeline: usage error: --steps: unknown job(s) summarise" in capsys.readouterr().err
    # a step's own bad override is refused before Spark starts (no "==> train" line)
    assert pipeline.main(["--steps", "train", "--step-args", "train=--set quality.positive_rate_bounds.max=1.5"]) == 2
    out, err = capsys.readouterr()
    assert "train: configuration error:" in err and "must be in [0, 1], got 1.5" in err and "==>" not in out
