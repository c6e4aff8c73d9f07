"""Run under ``horovodrun -np 2``: two optimisation steps of the real ``train_step`` on halves
of fixed global batches (the second with rank 1 padding); rank 0 saves the weights.

    horovodrun -np 2 -H localhost:2 --gloo python -m tests.workers.global_batch_step OUT.pt
"""
from __future__ import annotations

import sys

import torch

from training.distributed import HorovodCommunicator
from training.loop import StepContext, train_step
from training.loss import task_weights
from training.model import FeatureSpec, MultiTaskMoE

SPEC = FeatureSpec(cardinalities=(11, 7, 8), num_dense=0)   # no dense input: no BatchNorm statistics
GLOBAL_BATCH = 64


def global_batch(seed: int):
    from training.data import Batch

    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (GLOBAL_BATCH,), generator=g) for c in SPEC.cardinalities], 1)
    slot = cat[:, 2].clamp_max(6)
    label = (torch.rand(GLOBAL_BATCH, generator=g) < 0.3).float()
    return Batch(cat, torch.zeros(GLOBAL_BATCH, 0), label, slot, (slot >= 4).long(), torch.ones(GLOBAL_BATCH))


def rows(batch, part: slice):
    from training.data import Batch

    return Batch(*(t[part] for t in (batch.categorical, batch.dense, batch.label, batch.slot, batch.task,
                                     batch.weight)))


def initial_model() -> MultiTaskMoE:
    torch.manual_seed(0)
    return MultiTaskMoE(SPEC, tasks=2, expert_hidden=(16,), tower_hidden=(8,))


def context(model, comm, normalization):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    wrapped_model, wrapped_opt = comm.wrap(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return StepContext(model, wrapped_model, wrapped_opt, scheduler, comm, task_weights(2), True, normalization)


def main(out: str) -> None:
    comm = HorovodCommunicator()
    half = GLOBAL_BATCH // comm.size
    mine = slice(comm.rank * half, (comm.rank + 1) * half)
    states = {}
    for normalization in ("paper", "per_task"):
        model = initial_model()
        comm.broadcast_state(model)
        ctx = context(model, comm, normalization)
        first = rows(global_batch(1), mine)
        train_step(ctx, first, padding=False)
        # second step: rank 0 has rows, rank 1's shard is exhausted and pads with its last batch
        train_step(ctx, rows(global_batch(2), mine) if comm.rank == 0 else first, padding=comm.rank != 0)
        states[normalization] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if comm.rank == 0:
        torch.save(states, out)
    comm.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
