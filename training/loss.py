"""Adaptive loss masking (ALM) for multi-task CTR.

With ALM each example's BCE reaches only the head of its own task m(x) (derived from its
slot by the grouping); each task's loss is the mean over that task's examples in the batch,
and the task losses are combined with weights lambda_m that sum to 1:

    L = sum_m lambda_m * mean_{i : task_i = m} BCE(z_im, y_i)

Without ALM (the ablation) every head is trained on every example:

    L = sum_m lambda_m * mean_i BCE(z_im, y_i)

A task absent from a batch contributes nothing (and its head gets no gradient).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def task_weights(num_tasks: int, weights: Sequence[float] | None = None) -> Tensor:
    """lambda (T,): uniform by default; given weights are normalised to sum to 1."""
    if weights is None:
        return torch.full((num_tasks,), 1.0 / num_tasks)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (num_tasks,) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"task weights must be {num_tasks} non-negative numbers, got {list(weights)}")
    return w / w.sum()


def multitask_bce(logits: Tensor, labels: Tensor, task: Tensor, lambdas: Tensor, alm: bool = True,
                  example_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Combined loss and the per-task losses.

    Args:
        logits (B, T), labels (B,) in {0, 1}, task (B,) int64 in [0, T), lambdas (T,),
        example_weight (B,) optional per-example weight (e.g. zero for padding rows).
    Returns:
        loss (), per_task (T,)
    """
    num_tasks = logits.shape[1]
    y = labels.to(logits.dtype).unsqueeze(1).expand_as(logits)                    # (B, T)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")         # (B, T)
    if alm:
        mask = F.one_hot(task, num_tasks).to(logits.dtype)                        # (B, T)
    else:
        mask = torch.ones_like(bce)                                               # (B, T)
    if example_weight is not None:
        mask = mask * example_weight.to(logits.dtype).unsqueeze(1)                # (B, T)
    totals = (bce * mask).sum(0)                                                  # (T,)
    counts = mask.sum(0)                                                          # (T,)
    per_task = totals / counts.clamp_min(1e-12)                                   # (T,)
    per_task = torch.where(counts > 0, per_task, torch.zeros_like(per_task))
    loss = (lambdas.to(logits.device, logits.dtype) * per_task).sum()
    return loss, per_task.detach()


def own_task_logit(logits: Tensor, task: Tensor) -> Tensor:
    """Each example's score comes from its own task's head. (B, T), (B,) -> (B,)"""
    return logits.gather(1, task.unsqueeze(1)).squeeze(1)
