"""Adaptive loss masking (ALM) for multi-task CTR, with two normalisations.

With ALM each example's BCE reaches only the head of its own task m(x_i) (derived from its
slot by the grouping); without ALM (the ablation) every head is trained on every example.
Let a_im = 1{m = m(x_i)} with ALM (1 for every m without), e_i >= 0 an example weight (0 for
padding rows, 1/rate with ``use_sample_weight``, 0 for rows a uni-modal model skips) and
lambda the task weights (they sum to 1; uniform by default).

``paper`` (the default; KDD'25 eq. 2-3): one normalisation by the number of examples,

    L = (1/N) sum_i sum_m T * lambda_m * a_im * e_i * BCE_im,     N = sum_i e_i,

so with uniform lambda (T * lambda_m = 1) each example weighs the same and a task's share of
the loss follows its example count (audio dominates, as the traffic does).

``per_task``: the mean within each task, then the lambda-weighted sum,

    L = sum_m lambda_m * (sum_i a_im e_i BCE_im) / (sum_i a_im e_i),

so every task weighs lambda_m whatever its example count. A task absent from a batch
contributes nothing (its head gets no gradient).

Distributed training computes the numerators on each worker and the denominators over all
workers (``LossTerms.denominators``, summed by one all-reduce); the loss then equals the
loss of the global batch, whatever the number of workers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from core.config_models import ALM_NORMALIZATIONS


def task_weights(num_tasks: int, weights: Sequence[float] | None = None) -> Tensor:
    """lambda (T,): uniform by default; given weights are normalised to sum to 1."""
    if weights is None:
        return torch.full((num_tasks,), 1.0 / num_tasks)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (num_tasks,) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"task weights must be {num_tasks} non-negative numbers, got {list(weights)}")
    return w / w.sum()


@dataclass
class LossTerms:
    """Sums over one worker's batch. totals (T,): sum_i a_im e_i BCE_im; head_weight (T,):
    sum_i a_im e_i; examples (): sum_i e_i."""
    totals: Tensor
    head_weight: Tensor
    examples: Tensor

    @property
    def denominators(self) -> Tensor:
        """(T + 1,): head weights and the example count, what workers sum before combining."""
        return torch.cat([self.head_weight, self.examples.reshape(1)]).detach()


def loss_terms(logits: Tensor, labels: Tensor, task: Tensor, alm: bool = True,
               example_weight: Tensor | None = None) -> LossTerms:
    """logits (B, T), labels (B,) in {0, 1}, task (B,) int64 in [0, T), example_weight (B,)."""
    num_tasks = logits.shape[1]
    y = labels.to(logits.dtype).unsqueeze(1).expand_as(logits)                    # (B, T)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")         # (B, T)
    e = (torch.ones_like(labels, dtype=logits.dtype) if example_weight is None
         else example_weight.to(logits.dtype))                                    # (B,)
    mask = F.one_hot(task, num_tasks).to(logits.dtype) if alm else torch.ones_like(bce)
    mask = mask * e.unsqueeze(1)                                                  # (B, T)
    return LossTerms((bce * mask).sum(0), mask.sum(0), e.sum())


def combine(terms: LossTerms, lambdas: Tensor, normalization: str = "paper",
            denominators: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(loss (), per-task mean BCE (T,)) from ``terms``; ``denominators`` (T + 1,) default to
    the batch's own (pass the all-reduced sum to get the global batch's loss)."""
    if normalization not in ALM_NORMALIZATIONS:
        raise ValueError(f"alm normalization must be one of {ALM_NORMALIZATIONS}, got {normalization!r}")
    den = terms.denominators if denominators is None else denominators.to(terms.totals)
    head_weight, examples = den[:-1], den[-1]
    lambdas = lambdas.to(terms.totals.device, terms.totals.dtype)
    per_task = torch.where(head_weight > 0, terms.totals / head_weight.clamp_min(1e-12),
                           torch.zeros_like(terms.totals))                        # (T,)
    if normalization == "per_task":
        loss = (lambdas * per_task).sum()
    else:
        loss = (len(lambdas) * lambdas * terms.totals).sum() / examples.clamp_min(1e-12)
    return loss, per_task.detach()


def multitask_bce(logits: Tensor, labels: Tensor, task: Tensor, lambdas: Tensor, alm: bool = True,
                  example_weight: Tensor | None = None, normalization: str = "paper") -> tuple[Tensor, Tensor]:
    """Combined loss and the per-task mean losses of one batch (see the module docstring).

    Args:
        logits (B, T), labels (B,) in {0, 1}, task (B,) int64 in [0, T), lambdas (T,),
        example_weight (B,) optional per-example weight (e.g. zero for padding rows).
    Returns:
        loss (), per_task (T,)
    """
    return combine(loss_terms(logits, labels, task, alm, example_weight), lambdas, normalization)


def own_task_logit(logits: Tensor, task: Tensor) -> Tensor:
    """Each example's score comes from its own task's head. (B, T), (B,) -> (B,)"""
    return logits.gather(1, task.unsqueeze(1)).squeeze(1)
