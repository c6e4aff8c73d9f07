"""Distributed back ends behind one small interface: Horovod, torch.distributed (DDP, as
launched by PySpark's TorchDistributor) and a single local process.

The training loop only sees a ``Communicator``: it wraps the model and optimizer, broadcasts
rank 0's state, and shares small Python objects (the early-stopping decision).

Launchers: ``run_horovod`` uses ``horovod.spark.run`` (the user's design card; Horovod is no
longer released, so ``run_torch_distributor`` runs the same worker on TorchDistributor).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Communicator:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    name: str = "local"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        """(model to call, optimizer to step) with gradients averaged across workers."""
        return model, optimizer

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make every worker's parameters, buffers (and optimizer state) equal rank 0's."""

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all workers (a new tensor)."""
        return tensor.clone()

    def barrier(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class HorovodCommunicator(Communicator):
    name = "horovod"

    def __init__(self):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self._broadcasts = 0
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def wrap(self, model, optimizer):
        # a new optimizer over the same parameters, with empty state: the loop wraps before it
        # builds the schedule and loads a checkpoint, so both act on the optimizer that steps
        return model, self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def broadcast_state(self, model, optimizer=None):
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if optimizer is not None:
            self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def broadcast_object(self, obj):
        # Horovod matches collectives by name and defaults it to type(obj).__name__, which
        # differs when non-root ranks pass a placeholder (None): name each call explicitly.
        self._broadcasts += 1
        return self.hvd.broadcast_object(obj, root_rank=0, name=f"camoe.object.{self._broadcasts}")

    def allreduce_sum(self, tensor):
        return self.hvd.allreduce(tensor.detach().cpu(), op=self.hvd.Sum, name="camoe.sum").to(tensor.device)

    def barrier(self):
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def shutdown(self):
        self.hvd.shutdown()


class TorchDistCommunicator(Communicator):
    name = "torch_distributor"

    def __init__(self):
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))

    def wrap(self, model, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(model, device_ids=device_ids), optimizer

    def broadcast_state(self, model, optimizer=None):
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, src=0)
        if optimizer is not None:
            state = self.broadcast_object(optimizer.state_dict())
            optimizer.load_state_dict(state)

    def broadcast_object(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def allreduce_sum(self, tensor):
        out = tensor.detach().clone()
        self.dist.all_reduce(out, op=self.dist.ReduceOp.SUM)
        return out

    def barrier(self):
        self.dist.barrier()

    def shutdown(self):
        self.dist.destroy_process_group()


def communicator(backend: str) -> Communicator:
    if backend == "horovod":
        return HorovodCommunicator()
    if backend == "torch_distributor":
        return TorchDistCommunicator()
    if backend == "local":
        return Communicator()
    raise ValueError(f"unknown backend {backend!r}: horovod, torch_distributor or local")


# ----------------------------------------------------------------------------- launchers
def run_horovod(worker: Callable[..., Any], args: tuple, num_proc: int) -> Any:
    """Run ``worker(*args)`` on ``num_proc`` Spark tasks with Horovod; rank 0's return value."""
    import horovod.spark

    env = {"PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", ""), "HOROVOD_GLOO_TIMEOUT_SECONDS": "120"}
    results = horovod.spark.run(worker, args=args, num_proc=num_proc, use_gloo=True,
                                env={**os.environ, **{k: v for k, v in env.items() if v}},
                                stdout=None, stderr=None, verbose=1)
    return results[0]


def run_torch_distributor(worker: Callable[..., Any], args: tuple, num_proc: int, use_gpu: bool = False,
                          local_mode: bool = True) -> Any:
    """Run ``worker(*args)`` with PySpark's TorchDistributor (torch.distributed, gloo/NCCL); rank
    0's return value (the worker returns its result from rank 0 only, None elsewhere).

    ``local_mode=False``: one barrier task per process on the executors (each runs torchrun with
    one process, node rank = partition id); TorchDistributor returns partition 0's value, which
    is rank 0's. ``local_mode=True``: torchrun on the driver, whose ``.run()`` returns whichever
    rank finished last, so rank 0's value is read back from a file."""
    import tempfile

    from pyspark.ml.torch.distributor import TorchDistributor

    if not local_mode:
        return TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=use_gpu).run(worker, *args)
    with tempfile.TemporaryDirectory(prefix="camoe-td-") as tmp:
        result_path = os.path.join(tmp, "rank0.pt")
        TorchDistributor(num_processes=num_proc, local_mode=True, use_gpu=use_gpu).run(
            _rank0_result_to_file, worker, args, result_path)
        return torch.load(result_path, weights_only=False)


def torch_distributor_on_driver(place: str, master: str) -> bool:
    """TorchDistributor's ``local_mode`` for ``training.torch_distributor_on`` and the Spark master:
    ``auto`` runs on the driver only where there are no executors apart from it (``local``,
    ``local[N]``; ``local-cluster[...]`` has real ones)."""
    if place not in ("auto", "driver", "executors"):
        raise ValueError(f"torch_distributor_on must be auto, driver or executors, got {place!r}")
    return place == "driver" or (place == "auto" and (master == "local" or master.startswith("local[")))


def _rank0_result_to_file(worker, args, path):
    result = worker(*args)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(result, path)
    return None

