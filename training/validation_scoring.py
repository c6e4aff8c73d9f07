"""Scoring a split with a model in this process (no Spark): what training validates each epoch
on, and what tests compare Spark scoring against. Metrics are on the corrected scale evaluation
reports (logit + the down-sampling shift of the row's slot).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.metrics import average_precision
from training.data import FeatureLayout, iterate_batches
from training.loss import own_task_logit


@torch.no_grad()
def score(model: nn.Module, files, layout: FeatureLayout, slot_to_task: torch.Tensor, batch_size: int = 8192,
          device: torch.device | str = "cpu", expert_mask: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Own-task logits for every row of ``files`` (in reader order, no shuffling)."""
    model.eval()
    parts: dict[str, list] = {"logit": [], "label": [], "slot": [], "task": [], "weight": []}
    for batch in iterate_batches(files, layout, slot_to_task, batch_size, seed=0, shuffle=False):
        b = batch.to(device)
        mask = expert_mask.to(device) if expert_mask is not None else None
        logit = own_task_logit(model(b.categorical, b.dense, expert_mask=mask).float(), b.task)
        for name, value in (("logit", logit), ("label", b.label), ("slot", b.slot), ("task", b.task),
                            ("weight", b.weight)):
            parts[name].append(value.cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def validation_metrics(logit: np.ndarray, label: np.ndarray, slot: np.ndarray, task: np.ndarray,
                       tasks, slot_logit_shift=None) -> dict[str, float]:
    """Metrics of corrected scores z = logit + shift[slot] (the scale evaluation reports):
    log loss, mean per-slot AUC-PR (slots with clicks and non-clicks), pooled and per-task AUC-PR."""
    shift = np.zeros(int(slot.max(initial=0)) + 1) if slot_logit_shift is None else np.asarray(slot_logit_shift)
    z = logit.astype(np.float64) + shift[slot]
    y = label.astype(np.float64)
    out = {"rows": int(y.size),
           "log_loss": float(np.mean(np.logaddexp(0.0, z) - y * z)) if y.size else float("nan"),
           "auc_pr": average_precision(y, z)}
    # a slot of one class ranks nothing: no click gives NaN, only clicks a 1 whatever the scores
    per_slot = [average_precision(y[slot == s], z[slot == s]) for s in np.unique(slot)
                if 0 < y[slot == s].sum() < (slot == s).sum()]
    out["mean_slot_auc_pr"] = float(np.mean(per_slot)) if per_slot else float("nan")
    for i, name in enumerate(tasks):
        sel = task == i
        out[f"auc_pr_{name}"] = average_precision(y[sel], z[sel]) if sel.any() else float("nan")
    return out


def evaluate(model, files, layout, slot_to_task, tasks, batch_size=8192, device="cpu",
             slot_logit_shift=None, slots=None) -> dict[str, float]:
    """Validation metrics of the corrected scores (see ``validation_metrics``) on the rows of
    ``slots`` (None: every slot)."""
    scored = score(model, files, layout, slot_to_task, batch_size, device)
    keep = np.ones(scored["label"].size, bool) if slots is None else np.isin(scored["slot"], slots)
    return validation_metrics(scored["logit"][keep], scored["label"][keep], scored["slot"][keep].astype(np.int64),
                              scored["task"][keep], tasks, slot_logit_shift)
