"""CAMoE modules: shapes, the math of each block, ALM gradients, expert masking, overfitting."""
from __future__ import annotations

import pytest
import torch

from core.config import load_config
from training.loss import combine, loss_terms, multitask_bce, own_task_logit, task_weights
from training.model import (
    DenseStandardizer,
    Experts,
    FeatureSpec,
    MultiTaskMoE,
    SharedBottom,
    StackedLowRankCross,
    StackedMLP,
    TaskGates,
    WideAndDeep,
    build_model,
    pooled_moments,
)

SPEC = FeatureSpec(cardinalities=(11, 7, 5), num_dense=4)


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in SPEC.cardinalities], dim=1)
    dense = torch.randn(n, SPEC.num_dense, generator=g)
    return cat, dense


def test_shared_bottom_uses_one_row_per_feature_value_and_normalises_dense():
    bottom = SharedBottom(SPEC, embedding_dim=3)
    cat, dense = batch()
    x0 = bottom(cat, dense)
    assert x0.shape == (64, 3 * 3 + 4)
    # feature 1, value 2 is row 11 + 2 of the shared table
    assert torch.equal(x0[:, 3:6][cat[:, 1] == 2][0], bottom.embedding.weight[13])
    assert x0[:, 9:].mean(0).abs().max() < 1e-5            # BatchNorm in training mode


def test_the_dense_standardizer_applies_the_training_window_statistics_first_in_every_model():
    """Breakage caught: a standardizer that divides before subtracting, is skipped by one model
    (Wide&Deep's wide part reads dense too), or whose statistics do not follow the weights."""
    standardize = DenseStandardizer(2, (1.0, 10.0), (2.0, 5.0))
    torch.testing.assert_close(standardize(torch.tensor([[3.0, 0.0], [1.0, 10.0]])),
                               torch.tensor([[1.0, -2.0], [0.0, 0.0]]))
    assert torch.equal(DenseStandardizer(3)(torch.ones(2, 3)), torch.ones(2, 3))          # no statistics
    assert set(standardize.state_dict()) == {"mean", "std"}                             # saved with the weights
    spec = FeatureSpec((11, 7, 5), 4, dense_mean=(100.0, -3.0, 0.5, 7.0), dense_std=(50.0, 2.0, 0.1, 1.0))
    cat, dense = batch()
    raw = dense * torch.tensor(spec.dense_std) + torch.tensor(spec.dense_mean)          # what the table stores
    for make in (lambda s: MultiTaskMoE(s, tasks=2), WideAndDeep):
        torch.manual_seed(0)
        plain = make(SPEC).eval()
        torch.manual_seed(0)
        scaled = make(spec).eval()
        with torch.no_grad():
            torch.testing.assert_close(scaled(cat, raw), plain(cat, dense), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="but the model has 4 dense features"):
        DenseStandardizer(4, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="must be positive"):
        DenseStandardizer(1, (0.0,), (0.0,))


def test_pooled_moments_equal_the_moments_of_all_values_and_guard_constants():
    """Per-slot (count, mean, population variance) combined as the whole column's: the
    statistics training fits in one grouped scan."""
    g = torch.Generator().manual_seed(1)
    parts = [torch.randn(n, generator=g, dtype=torch.float64) * s + m for n, s, m in ((50, 1.0, 3.0), (7, 4.0, -2.0),
                                                                                    (200, 0.5, 1e6))]
    groups = [(len(p), float(p.mean()), float(p.var(unbiased=False))) for p in parts] + [(0, None, None)]
    mean, std = pooled_moments(groups)
    every = torch.cat(parts)
    assert mean == pytest.approx(float(every.mean()), rel=1e-12)
    assert std == pytest.approx(float(every.std(unbiased=False)), rel=1e-9)
    assert pooled_moments([(5, 2.0, 0.0), (3, 2.0, 0.0)]) == (2.0, 1.0)                 # a constant: std 1
    assert pooled_moments([(0, None, None)]) == (0.0, 1.0)                                # no values at all


def test_stacked_cross_matches_the_dcn_v2_formula_per_expert():
    torch.manual_seed(0)
    cross = StackedLowRankCross(experts=3, width=6, rank=2, layers=2)
    x0 = torch.randn(5, 6)
    out = cross(x0)
    assert out.shape == (3, 5, 6)
    for k in range(3):
        x = x0
        for down, up in zip(cross.down, cross.up):
            h = torch.relu(x @ down.weight[k] + down.bias[k])
            x = x + x0 * (h @ up.weight[k] + up.bias[k])
        torch.testing.assert_close(out[k], x)


def test_experts_gates_and_towers_shapes():
    x0 = torch.randn(8, 10)
    assert Experts(2, 10, [16, 12], cross_layers=2, cross_rank=3)(x0).shape == (2, 8, 10 + 12)
    assert Experts(2, 10, [16, 12], cross_layers=0, cross_rank=3)(x0).shape == (2, 8, 10 + 12)
    gates = TaskGates(10, tasks=3, experts=2)(x0)
    assert gates.shape == (8, 3, 2)
    torch.testing.assert_close(gates.sum(2), torch.ones(8, 3))
    assert StackedMLP(3, 10, [4, 1], final_activation=False)(x0.expand(3, -1, -1)).shape == (3, 8, 1)


def test_without_crosses_an_expert_keeps_the_x0_skip_and_its_width():
    """MMoE / "CAMoE without DCN" differ from CAMoE by the crosses alone: same tower width, x0 kept."""
    torch.manual_seed(5)
    x0 = torch.randn(8, 10)
    no_cross = Experts(2, 10, [16, 12], cross_layers=0, cross_rank=3)
    out = no_cross(x0)
    torch.testing.assert_close(out[:, :, :10], x0.expand(2, -1, -1))
    torch.testing.assert_close(out[:, :, 10:], no_cross.mlp(x0.expand(2, -1, -1)))
    camoe = MultiTaskMoE(SPEC, tasks=2, cross_layers=2)
    mmoe = MultiTaskMoE(SPEC, tasks=2, cross_layers=0)
    assert camoe.experts.output_dim == mmoe.experts.output_dim
    assert {n for n, _ in camoe.named_parameters()} - {n for n, _ in mmoe.named_parameters()} == \
        {n for n, _ in camoe.named_parameters() if n.startswith("experts.cross.")}


def test_the_ablation_models_compare_like_with_like():
    cfg = load_config()
    camoe, mmoe = cfg.model("camoe"), cfg.model("mmoe")
    differing = {f for f in camoe.__dataclass_fields__ if getattr(camoe, f) != getattr(mmoe, f)}
    assert differing == {"name", "cross_layers"}, "MMoE t=2 is CAMoE without DCN, with masking"
    assert mmoe.alm and mmoe.alm_normalization == "paper"
    assert "camoe_t1" in cfg.experiments.models and "camoe_no_dcn" not in cfg.models
    assert all(m.slot_features == ("slot",) for m in cfg.models.values())


def test_moe_and_wide_deep_produce_one_logit_per_task():
    cat, dense = batch()
    assert MultiTaskMoE(SPEC, tasks=2)(cat, dense).shape == (64, 2)
    assert MultiTaskMoE(SPEC, tasks=7, experts=3, cross_layers=0)(cat, dense).shape == (64, 7)
    assert WideAndDeep(SPEC)(cat, dense).shape == (64, 1)


def _tower_grads(model):
    return [p.grad for p in model.towers.parameters()]


def test_alm_leaves_video_tower_untouched_on_audio_batch():
    torch.manual_seed(1)
    cat, dense = batch()
    labels = (torch.rand(64) < 0.3).float()
    audio = torch.zeros(64, dtype=torch.long)                  # every example is task 0 (audio)
    for alm, video_grad_is_zero in ((True, True), (False, False)):
        model = MultiTaskMoE(SPEC, tasks=2)
        loss, per_task = multitask_bce(model(cat, dense), labels, audio, task_weights(2), alm=alm)
        loss.backward()
        for grad in _tower_grads(model):                       # stacked (T, ...): index 1 = video
            assert torch.count_nonzero(grad[1]).item() == 0 if video_grad_is_zero else \
                torch.count_nonzero(grad[1]).item() > 0
            assert torch.count_nonzero(grad[0]).item() > 0
        gate_grad = model.gates.proj.weight.grad.view(2, 2, -1)
        assert (torch.count_nonzero(gate_grad[1]) == 0) == video_grad_is_zero
        if alm:
            assert per_task[1].item() == 0.0


ALM_LOGITS = torch.tensor([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.7]])
ALM_LABELS = torch.tensor([1.0, 0.0, 1.0])
ALM_TASK = torch.tensor([0, 1, 1])


def _bce(z, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(torch.as_tensor(z), torch.as_tensor(y))


def test_alm_paper_normalisation_is_one_mean_over_examples_by_hand():
    """Paper eq. 2-3: L = (1/N) sum_i sum_m T lambda_m 1{m = task_i} BCE_im (uniform: T lambda = 1)."""
    b0, b1, b2 = _bce(0.5, 1.0), _bce(0.1, 0.0), _bce(0.7, 1.0)
    loss, per_task = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, task_weights(2))
    torch.testing.assert_close(loss, (b0 + b1 + b2) / 3)           # task 1 has 2 of 3 examples: 2/3 share
    torch.testing.assert_close(per_task, torch.stack([b0, (b1 + b2) / 2]))
    weighted, _ = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, task_weights(2, [0.25, 0.75]))
    torch.testing.assert_close(weighted, (2 * 0.25 * b0 + 2 * 0.75 * (b1 + b2)) / 3)
    # example weights (1/rate, padding 0) weigh the sum and N alike
    w = torch.tensor([2.0, 1.0, 0.0])
    ew, _ = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, task_weights(2), example_weight=w)
    torch.testing.assert_close(ew, (2 * b0 + b1) / 3)
    # without ALM every head sees every example, still one normalisation by N
    no_alm, _ = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, task_weights(2), alm=False)
    all_heads = sum(_bce(ALM_LOGITS[i, m], ALM_LABELS[i]) for i in range(3) for m in range(2))
    torch.testing.assert_close(no_alm, all_heads / 3)


def test_alm_per_task_normalisation_is_the_weighted_mean_of_task_means_by_hand():
    lambdas = task_weights(2, [0.25, 0.75])
    loss, per_task = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, lambdas, normalization="per_task")
    t0 = _bce(0.5, 1.0)
    t1 = (_bce(0.1, 0.0) + _bce(0.7, 1.0)) / 2
    torch.testing.assert_close(per_task, torch.stack([t0, t1]))
    torch.testing.assert_close(loss, 0.25 * t0 + 0.75 * t1)
    no_alm, _ = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, lambdas, alm=False, normalization="per_task")
    torch.testing.assert_close(no_alm, 0.25 * _bce(ALM_LOGITS[:, 0], ALM_LABELS)
                               + 0.75 * _bce(ALM_LOGITS[:, 1], ALM_LABELS))
    torch.testing.assert_close(own_task_logit(ALM_LOGITS, ALM_TASK), torch.tensor([0.5, 0.1, 0.7]))
    with pytest.raises(ValueError, match="task weights must be 2"):
        task_weights(2, [1.0])
    with pytest.raises(ValueError, match="normalization must be one of"):
        multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, lambdas, normalization="mean")


@pytest.mark.parametrize("normalization", ["paper", "per_task"])
def test_zero_weight_rows_change_nothing_and_split_batches_sum_to_the_whole(normalization):
    lambdas = task_weights(2, [0.4, 0.6])
    whole, _ = multitask_bce(ALM_LOGITS, ALM_LABELS, ALM_TASK, lambdas, normalization=normalization)
    padded, _ = multitask_bce(torch.cat([ALM_LOGITS, ALM_LOGITS]), torch.cat([ALM_LABELS, 1 - ALM_LABELS]),
                              torch.cat([ALM_TASK, ALM_TASK]), lambdas, normalization=normalization,
                              example_weight=torch.tensor([1., 1, 1, 0, 0, 0]))
    torch.testing.assert_close(padded, whole)
    # two workers' halves, combined with the summed denominators, give the whole batch's loss
    halves = [loss_terms(ALM_LOGITS[rows], ALM_LABELS[rows], ALM_TASK[rows]) for rows in ([0, 1], [2])]
    denominators = halves[0].denominators + halves[1].denominators
    parts = [combine(h, lambdas, normalization, denominators)[0] for h in halves]
    torch.testing.assert_close(parts[0] + parts[1], whole)


def test_expert_masking_zeroes_chosen_experts_at_scoring_time():
    torch.manual_seed(2)
    model = MultiTaskMoE(SPEC, tasks=2, experts=2).eval()
    cat, dense = batch()
    with torch.no_grad():
        full = model(cat, dense)
        only_first = model(cat, dense, expert_mask=torch.tensor([True, False]))
        none = model(cat, dense, expert_mask=torch.tensor([False, False]))
        x0 = model.bottom(cat, dense)
        expected = model.towers(torch.einsum("btk,kbe->tbe", model.gates(x0),
                                             model.experts(x0) * torch.tensor([1.0, 0.0]).view(-1, 1, 1)))
    torch.testing.assert_close(only_first, expected.squeeze(2).T)
    assert not torch.allclose(full, only_first)
    # with every expert masked, the towers see zeros: one constant logit per task
    assert torch.allclose(none, none[:1].expand_as(none))


def test_every_configured_model_builds_and_trains_a_step():
    """Every task has examples in the batch, so the loss reaches every parameter. Asserted per
    model: a finite loss that one Adam step lowers; every parameter trainable, with a finite
    gradient that is non-zero (the one exception: a single expert's gate, a softmax over one
    expert, is constantly 1) and changed by the step; in each embedding table, exactly the rows
    of the batch's ids have a gradient. Breakage caught: a branch cut off by a constant factor
    (``* 0``) or ``.detach()`` (zero or missing gradients where ``grad is not None`` passed), a
    frozen parameter, an embedding lookup at the wrong offset."""
    cfg = load_config()
    cat, dense = batch()
    labels = (torch.rand(64, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    offsets = torch.tensor([0, *SPEC.cardinalities[:-1]]).cumsum(0)
    used_rows = torch.zeros(sum(SPEC.cardinalities), dtype=torch.bool)
    used_rows[(cat + offsets).flatten()] = True
    for name, settings in cfg.models.items():
        torch.manual_seed(0)
        tasks = cfg.taxonomy.grouping(settings.grouping).num_tasks
        model = build_model(settings, SPEC, tasks)
        task = torch.arange(64) % tasks                                 # every task's head is reached
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss, _ = multitask_bce(model(cat, dense), labels, task, task_weights(tasks), alm=settings.alm)
        loss.backward()
        assert torch.isfinite(loss), name
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer.step()
        for n, p in model.named_parameters():
            assert p.requires_grad, f"{name}: {n} is frozen"
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {n}"
            if settings.experts == 1 and n.startswith("gates."):
                continue                                                 # softmax over one expert: 1
            assert torch.count_nonzero(p.grad) > 0, f"{name}: {n} has an all-zero gradient"
            assert not torch.equal(p.detach(), before[n]), f"{name}: {n} did not change"
            if n in ("bottom.embedding.weight", "wide.weight"):
                assert torch.equal(p.grad.abs().sum(1) > 0, used_rows), f"{name}: {n}"
        with torch.no_grad():
            after, _ = multitask_bce(model(cat, dense), labels, task, task_weights(tasks), alm=settings.alm)
        assert after < loss, f"{name}: the step did not lower the batch's loss"


def test_small_camoe_overfits_a_tiny_batch():
    torch.manual_seed(3)
    cat, dense = batch(n=32, seed=4)
    labels = (torch.rand(32) < 0.5).float()
    task = torch.randint(0, 2, (32,))
    model = MultiTaskMoE(SPEC, tasks=2, embedding_dim=8, expert_hidden=(32,), tower_hidden=(16,))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        loss, _ = multitask_bce(model(cat, dense), labels, task, task_weights(2))
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
