"""CAMoE and its baselines as small composable modules.

CAMoE (KDD'25, arXiv 2506.18735): a shared bottom (embeddings + BatchNorm'd dense features,
standardised first with the model's own training-window statistics) feeds K experts, each a
DCN-v2 low-rank cross network in parallel with a ReLU MLP; per-task softmax gates mix the
experts for per-task towers, one logit per task (modality).

All K experts (and all T towers) keep their weights in one stacked tensor and run as one
batched matmul, not a Python loop over experts: fewer kernel launches on CPU and GPU.

Shapes: B batch, F categorical features, D dense features, e embedding dim, d = F*e + D the
width of x0, K experts, T tasks, L cross layers, r cross rank.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureSpec:
    """The model's inputs: vocabulary size per categorical feature (index 0 = OOV), the number
    of dense features and their training-window statistics (empty: the inputs are used as they
    come, as by a model built without them)."""
    cardinalities: tuple[int, ...]
    num_dense: int
    dense_mean: tuple[float, ...] = ()
    dense_std: tuple[float, ...] = ()

    @classmethod
    def of(cls, layout) -> FeatureSpec:
        """The spec of a ``training.data.FeatureLayout``."""
        return cls(tuple(layout.cardinalities), len(layout.dense), tuple(layout.dense_mean), tuple(layout.dense_std))


class DenseStandardizer(nn.Module):
    """z = (x - mean) / std per dense feature, with the statistics of the training window's train
    days as buffers: the weights file carries them, so the model standardises its own raw inputs
    on any day (the feature table stores raw or log1p values).

    Args:
        num_dense: D. mean, std: D floats each, or empty (identity: mean 0, std 1).
    Call:
        dense (B, D) float -> (B, D)
    Example:
        >>> DenseStandardizer(2, (1.0, 10.0), (2.0, 5.0))(torch.tensor([[3.0, 0.0]])).tolist()
        [[1.0, -2.0]]
    """

    def __init__(self, num_dense: int, mean: Sequence[float] = (), std: Sequence[float] = ()):
        super().__init__()
        if len(mean) != len(std) or (mean and len(mean) != num_dense):
            raise ValueError(f"dense statistics for {len(mean)} means and {len(std)} stds, "
                             f"but the model has {num_dense} dense features")
        if any(not s > 0 for s in std):
            raise ValueError(f"dense standard deviations must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(list(mean) or [0.0] * num_dense, dtype=torch.float32))  # (D,)
        self.register_buffer("std", torch.tensor(list(std) or [1.0] * num_dense, dtype=torch.float32))    # (D,)

    def forward(self, dense: Tensor) -> Tensor:
        return (dense - self.mean) / self.std                                  # (B, D)


def pooled_moments(groups: Sequence[tuple[int, float | None, float | None]],
                   floor: float = 1e-9) -> tuple[float, float]:
    """``DenseStandardizer``'s (mean, population std) of a column from its per-group (count, mean,
    population variance), nulls left out of each (Chan et al.'s pairwise combination: no sum of
    squares, so no cancellation). No values: (0, 1); a std at or below ``floor`` (a constant): 1."""
    groups = [(int(n), float(m), float(v)) for n, m, v in groups if n]
    total = sum(n for n, _, _ in groups)
    if not total:
        return 0.0, 1.0
    mean = sum(n * m for n, m, _ in groups) / total
    variance = sum(n * (v + (m - mean) ** 2) for n, m, v in groups) / total
    std = math.sqrt(max(variance, 0.0))
    return mean, std if std > floor else 1.0


class SharedBottom(nn.Module):
    """x0 = [emb_1(c_1), ..., emb_F(c_F), BatchNorm(dense)], dense already standardised by the
    model (``DenseStandardizer``, first in every model's forward).

    One embedding table holds every feature's rows (offset per feature), so the lookup is a
    single gather. Index 0 of each feature is its out-of-vocabulary row.

    Args:
        spec: cardinalities and dense count. embedding_dim: e.
    Call:
        categorical (B, F) int64, dense (B, D) float -> x0 (B, F*e + D)
    Example:
        >>> bottom = SharedBottom(FeatureSpec((10, 5), 3), embedding_dim=4)
        >>> bottom(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3)).shape
        torch.Size([2, 11])
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int):
        super().__init__()
        if not spec.cardinalities:
            raise ValueError("the model needs at least one categorical feature")
        self.spec = spec
        offsets = torch.tensor([0, *spec.cardinalities[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)              # (F,)
        self.embedding = nn.Embedding(sum(spec.cardinalities), embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.01)
        self.dense_norm = nn.BatchNorm1d(spec.num_dense) if spec.num_dense else None
        self.output_dim = len(spec.cardinalities) * embedding_dim + spec.num_dense

    def forward(self, categorical: Tensor, dense: Tensor) -> Tensor:
        emb = self.embedding(categorical + self.offsets)                        # (B, F, e)
        parts = [emb.flatten(1)]                                                # (B, F*e)
        if self.dense_norm is not None:
            parts.append(self.dense_norm(dense))                                # (B, D)
        return torch.cat(parts, dim=1)                                          # (B, d)


class StackedLinear(nn.Module):
    """N independent linear layers applied to N inputs in one batched matmul.

    Call: x (N, B, in) -> (N, B, out).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)                         # (N, B, out)


class StackedMLP(nn.Module):
    """N independent ReLU MLPs run together. Call: x (N, B, in) -> (N, B, hidden[-1])."""

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], final_activation: bool = True):
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(StackedLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.final_activation = final_activation
        self.output_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)                                                        # (N, B, h_i)
            if i < len(self.layers) - 1 or self.final_activation:
                x = torch.relu(x)
        return x


class StackedLowRankCross(nn.Module):
    """K DCN-v2 low-rank cross networks (Wang et al., WWW'21) run together:

        x_{l+1} = x_l + x_0 * (U_l relu(V_l x_l + b_l) + c_l),   l = 0..L-1

    with V_l: d -> r, U_l: r -> d per expert (the paper's low-rank mixture form, one
    component per expert).

    Args: experts K, width d, rank r, layers L.
    Call: x0 (B, d) -> (K, B, d)
    Example:
        >>> StackedLowRankCross(2, 8, rank=2, layers=3)(torch.randn(4, 8)).shape
        torch.Size([2, 4, 8])
    """

    def __init__(self, experts: int, width: int, rank: int, layers: int):
        super().__init__()
        self.experts = experts
        self.down = nn.ModuleList(StackedLinear(experts, width, rank) for _ in range(layers))
        self.up = nn.ModuleList(StackedLinear(experts, rank, width) for _ in range(layers))
        for up in self.up:
            nn.init.normal_(up.weight, std=0.01)

    def forward(self, x0: Tensor) -> Tensor:
        base = x0.unsqueeze(0).expand(self.experts, -1, -1)                    # (K, B, d)
        x = base
        for down, up in zip(self.down, self.up):
            x = x + base * up(torch.relu(down(x)))                             # (K, B, d)
        return x


class Experts(nn.Module):
    """K experts over x0, each a cross branch in parallel with an MLP, concatenated.

    CAMoE's cross branch is an L-layer DCN-v2 network; with L = 0 it is the identity, so the
    expert keeps x0 as a skip next to its MLP. The MMoE baseline (and "CAMoE without DCN") is
    L = 0: removing the crosses removes nothing else (same width, same linear path).

    Call: x0 (B, d) -> (K, B, E) with E = d + hidden[-1].
    """

    def __init__(self, experts: int, width: int, hidden: Sequence[int], cross_layers: int, cross_rank: int):
        super().__init__()
        self.num_experts = experts
        self.mlp = StackedMLP(experts, width, hidden)
        self.cross = StackedLowRankCross(experts, width, cross_rank, cross_layers) if cross_layers else None
        self.output_dim = self.mlp.output_dim + width

    def forward(self, x0: Tensor) -> Tensor:
        stacked = x0.unsqueeze(0).expand(self.num_experts, -1, -1)             # (K, B, d)
        deep = self.mlp(stacked)                                               # (K, B, h)
        cross = stacked if self.cross is None else self.cross(x0)              # (K, B, d)
        return torch.cat([cross, deep], dim=2)                                 # (K, B, d + h)


class TaskGates(nn.Module):
    """Per-task softmax over experts: g_m = softmax(W_m x0).  Call: x0 (B, d) -> (B, T, K)."""

    def __init__(self, width: int, tasks: int, experts: int):
        super().__init__()
        self.tasks, self.experts = tasks, experts
        self.proj = nn.Linear(width, tasks * experts)

    def forward(self, x0: Tensor) -> Tensor:
        return torch.softmax(self.proj(x0).view(-1, self.tasks, self.experts), dim=2)  # (B, T, K)


class MultiTaskMoE(nn.Module):
    """CAMoE (cross + MLP experts) or MMoE (MLP experts): one logit per task.

    Args:
        spec: inputs. tasks: T. experts: K. embedding_dim: e. expert_hidden: expert MLP sizes.
        tower_hidden: per-task tower sizes. cross_layers: L (0 = no crosses, x0 skip kept: MMoE).
        cross_rank: r.
    Call:
        categorical (B, F) int64, dense (B, D), expert_mask (K,) bool or None
        -> logits (B, T)
        ``expert_mask[k] = False`` zeroes expert k's output at scoring time (paper app. A.2).
    Example:
        >>> m = MultiTaskMoE(FeatureSpec((10, 5), 3), tasks=2, experts=2)
        >>> m(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, spec: FeatureSpec, tasks: int, experts: int = 2, embedding_dim: int = 8,
                 expert_hidden: Sequence[int] = (128, 64), tower_hidden: Sequence[int] = (32,),
                 cross_layers: int = 2, cross_rank: int = 16):
        super().__init__()
        self.num_tasks, self.num_experts = tasks, experts
        self.standardize = DenseStandardizer(spec.num_dense, spec.dense_mean, spec.dense_std)
        self.bottom = SharedBottom(spec, embedding_dim)
        d = self.bottom.output_dim
        self.experts = Experts(experts, d, expert_hidden, cross_layers, cross_rank)
        self.gates = TaskGates(d, tasks, experts)
        self.towers = StackedMLP(tasks, self.experts.output_dim, [*tower_hidden, 1], final_activation=False)

    def forward(self, categorical: Tensor, dense: Tensor, expert_mask: Tensor | None = None) -> Tensor:
        x0 = self.bottom(categorical, self.standardize(dense))                 # (B, d)
        expert_out = self.experts(x0)                                          # (K, B, E)
        if expert_mask is not None:
            expert_out = expert_out * expert_mask.to(expert_out.dtype).view(-1, 1, 1)
        gates = self.gates(x0)                                                 # (B, T, K)
        mixed = torch.einsum("btk,kbe->tbe", gates, expert_out)                # (T, B, E)
        return self.towers(mixed).squeeze(2).transpose(0, 1)                   # (B, T)


class WideAndDeep(nn.Module):
    """Wide & Deep (Cheng et al., 2016), single task: the paper's production baseline.

    wide = sum of per-value weights + linear(dense); deep = MLP(x0); logit = wide + deep.
    Call: categorical (B, F), dense (B, D) -> logits (B, 1)
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int = 8, hidden: Sequence[int] = (128, 64)):
        super().__init__()
        self.num_tasks, self.num_experts = 1, 0
        self.standardize = DenseStandardizer(spec.num_dense, spec.dense_mean, spec.dense_std)
        self.bottom = SharedBottom(spec, embedding_dim)
        self.wide = nn.Embedding(sum(spec.cardinalities), 1)
        nn.init.zeros_(self.wide.weight)
        self.wide_dense = nn.Linear(spec.num_dense, 1) if spec.num_dense else None
        self.deep = StackedMLP(1, self.bottom.output_dim, [*hidden, 1], final_activation=False)

    def forward(self, categorical: Tensor, dense: Tensor, expert_mask: Tensor | None = None) -> Tensor:
        if expert_mask is not None:
            raise ValueError("Wide&Deep has no experts to mask")
        dense = self.standardize(dense)                                        # (B, D)
        wide = self.wide(categorical + self.bottom.offsets).sum(dim=1)         # (B, 1)
        if self.wide_dense is not None:
            wide = wide + self.wide_dense(dense)                               # (B, 1)
        deep = self.deep(self.bottom(categorical, dense).unsqueeze(0))[0]      # (B, 1)
        return wide + deep                                                     # (B, 1)


def build_model(settings, spec: FeatureSpec, num_tasks: int) -> nn.Module:
    """The model a conf/models.yaml entry describes (``settings``: core.config.ModelSettings)."""
    if settings.architecture == "wide_deep":
        if num_tasks != 1:
            raise ValueError(f"model {settings.name!r}: wide_deep is single-task; use a grouping "
                             "with one task (by: all)")
        return WideAndDeep(spec, settings.embedding_dim, settings.expert_hidden)
    return MultiTaskMoE(spec, tasks=num_tasks, experts=settings.experts,
                        embedding_dim=settings.embedding_dim, expert_hidden=settings.expert_hidden,
                        tower_hidden=settings.tower_hidden, cross_layers=settings.cross_layers,
                        cross_rank=settings.cross_rank)
