"""Per-task temperature scaling: p = sigmoid(z / T_task), one T per task head.

``z`` is the model's logit already corrected for the train-time down-sampling of its slot
(logit(q) = logit(p) + log(r_neg / r_pos), i.e. q = p / (p + (1 - p) / w) with w = r_neg / r_pos),
so temperatures are fitted, and applied, on the scale of real traffic. T is fitted by
minimising the validation NLL over log T (T > 0 by construction) with L-BFGS; dividing a
logit by T > 0 is monotone, so ranking metrics within a task do not change.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def fit_temperatures(logits: np.ndarray, labels: np.ndarray, tasks: np.ndarray, num_tasks: int,
                     bounds: tuple[float, float] = (0.05, 20.0), max_iter: int = 200) -> np.ndarray:
    """T per task minimising the NLL of sigmoid(logit / T); tasks without rows keep T = 1.

    logits, labels, tasks: (N,) arrays. Returns (num_tasks,) temperatures clipped to ``bounds``.
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    task = torch.as_tensor(np.asarray(tasks, dtype=np.int64))
    if not (z.shape == y.shape == task.shape):
        raise ValueError(f"logits, labels and tasks must have one shape, got {z.shape}, {y.shape}, {task.shape}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{int((~torch.isfinite(z)).sum())} non-finite logits")
    temperatures = np.ones(num_tasks)
    for t in range(num_tasks):
        sel = task == t
        if not sel.any() or y[sel].min() == y[sel].max():   # no rows, or one class: NLL has no minimum
            continue
        zt, yt = z[sel], y[sel]
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure(optimizer=optimizer, zt=zt, yt=yt, log_t=log_t):
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(zt / log_t.exp(), yt)
            loss.backward()
            return loss

        optimizer.step(closure)
        temperatures[t] = float(np.clip(math.exp(float(log_t.detach())), *bounds))
    return temperatures


def apply_temperatures(logits: np.ndarray, tasks: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Calibrated probabilities sigmoid(logit / T[task]). (N,), (N,), (T,) -> (N,)"""
    z = np.asarray(logits, dtype=np.float64) / np.asarray(temperatures, dtype=np.float64)[np.asarray(tasks)]
    return 1.0 / (1.0 + np.exp(-z))
