"""core/faults.py's kill points: which point arms which write (no process is killed here: the
real kills are tests/integration/test_kill.py)."""
from __future__ import annotations

import pytest

from core import faults


@pytest.fixture
def armed(monkeypatch):
    def arm(point: str, job: str | None):
        monkeypatch.setenv(faults.KILL_ENV, point)
        monkeypatch.setattr(faults, "_current_job", job)
    return arm


def test_a_table_point_arms_the_first_job_that_writes_the_table(armed):
    armed("during:predictions", "calibrate_evaluate")
    assert faults._armed("during", "camoe.predictions") and not faults._armed("after", "camoe.predictions")
    assert not faults._armed("during", "camoe.features")


def test_a_point_naming_its_job_arms_that_jobs_write_only(armed):
    armed("during:predictions:score", "calibrate_evaluate")       # calibrate_evaluate writes predictions too
    assert not faults._armed("during", "camoe.predictions")
    armed("during:predictions:score", "score")
    assert faults._armed("during", "camoe.predictions")


def test_nothing_is_armed_without_the_variable(armed, monkeypatch):
    armed("", "score")
    monkeypatch.delenv(faults.KILL_ENV)
    assert not faults._armed("during", "camoe.predictions") and not faults._armed("during", "")
