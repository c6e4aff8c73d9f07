"""Two real Horovod processes (horovodrun) do the same optimisation as one process on the global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.workers.global_batch_step import GLOBAL_BATCH, context, global_batch, initial_model, rows
from training.distributed import Communicator
from training.loop import train_step

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.slow
def test_two_horovod_workers_step_like_one_process_on_the_global_batch(tmp_path):
    # declared (`make env` builds it, training/scripts/build_horovod.sh): a build without it fails here, not skips
    import horovod.torch  # noqa: F401
    out = tmp_path / "rank0.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}
    done = subprocess.run([str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "-H", "localhost:2",
                           "--gloo", sys.executable, "-m", "tests.workers.global_batch_step", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    distributed = torch.load(out, weights_only=True)
    for normalization in ("paper", "per_task"):
        model = initial_model()
        ctx = context(model, Communicator(), normalization)
        train_step(ctx, global_batch(1), padding=False)
        # the padded step is the step on rank 0's rows alone
        train_step(ctx, rows(global_batch(2), slice(0, GLOBAL_BATCH // 2)), padding=False)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(distributed[normalization][name], tensor, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=name, k=normalization: f"{k} {n}: {m}")
        assert not torch.equal(model.state_dict()["towers.layers.0.weight"],
                               initial_model().state_dict()["towers.layers.0.weight"])


