"""Two Horovod processes do the same optimisation as one process on the global batch."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]




def test_torch_distributor_runs_on_the_executors_unless_there_are_none():
    from training.distributed import torch_distributor_on_driver

    assert torch_distributor_on_driver("auto", "local[2]") and torch_distributor_on_driver("auto", "local")
    assert not torch_distributor_on_driver("auto", "spark://127.0.0.1:7077")
    assert not torch_distributor_on_driver("auto", "local-cluster[2,1,1024]")     # real executors
    assert not torch_distributor_on_driver("auto", "yarn")
    assert torch_distributor_on_driver("driver", "yarn") and not torch_distributor_on_driver("executors", "local[2]")
    with pytest.raises(ValueError, match="auto, driver or executors, got 'gpu'"):
        torch_distributor_on_driver("gpu", "local[2]")
