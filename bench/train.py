"""Training-throughput benchmark: CAMoE (training/model.py) vs DeepCTR-Torch, examples/s of
forward + backward + Adam step, measured in one run. Target: CAMoE >= 2x the peer at equal
width and depth.

    python bench/train.py [--batch-size 2048] [--steps 10] [--repeats 7] [--threads 1,2] [--quick] [--no-ddp]

Peer: DeepCTR-Torch (``pip install --no-deps deepctr-torch``; its deps are torch, tqdm and
scikit-learn, which the venv already has). Configurations, all with 15 categorical features
(the demo's cardinalities), 9 dense features, 2 tasks, embedding dim 8 (x0 width d = 129):

* ``camoe``  -- ``MultiTaskMoE(spec, tasks=2, experts=2, embedding_dim=8, expert_hidden=(128, 64),
  tower_hidden=(32,), cross_layers=2, cross_rank=16)``, loss ``multitask_bce(..., alm=True)``.
* ``peer_camoe`` -- THE "same architecture" comparison. DeepCTR-Torch's MMOE has MLP experts
  only, so the peer is a ``deepctr_torch.models.basemodel.BaseModel`` subclass wired exactly like
  DeepCTR-Torch's own ``MMOE.forward`` (its embedding_dict / input_from_feature_columns /
  combined_dnn_input input path, per-task bias-free linear softmax gates, per-task towers
  ``DNN((32,)) -> Linear(32, 1) -> PredictionLayer``), whose K=2 experts are each
  ``CrossNetMix(d, low_rank=16, num_experts=1, layer_num=2)`` in parallel with
  ``DNN(d, (128, 64))``, outputs concatenated (d + 64), as DeepCTR-Torch's DCNMix does.
  CrossNetMix's cross is DCN-Mix's (tanh, an extra r x r matrix C, a 1-way gate) where CAMoE's is
  DCN-v2 low-rank (relu, bias): same width/depth/rank, parameter counts within ~2% (see JSON).
* ``camoe_mlp`` vs ``peer_mmoe`` -- the MLP-expert case, also same architecture: CAMoE's code with
  ``cross_layers=0`` (its MMoE mode) vs ``deepctr_torch.models.MMOE(num_experts=2,
  expert_dnn_hidden_units=(128, 64), gate_dnn_hidden_units=(), tower_dnn_hidden_units=(32,))``
  unchanged.

Peer training step = DeepCTR-Torch's ``BaseModel.fit`` inner step: ``model(x)`` on its float
input matrix, ``optim.zero_grad()``, sum over tasks of ``F.binary_cross_entropy(..., 'sum')`` +
``get_regularization_loss()`` + ``aux_loss``, ``backward()``, ``optim.step()`` (no tqdm, no
metrics, no ``.item()``). Peer L2 regularisation strengths are set to 0 (CAMoE trains with
weight_decay 0, so both do the same work). Both: ``torch.optim.Adam(lr=1e-3)``, same batch size,
pre-built in-memory tensors (no data loading), warm-up steps excluded, ``--repeats`` timed
repetitions of ``--steps`` steps, models interleaved per repetition (so machine noise hits all
alike), median examples/s reported (best too); the comparison runs once per ``--threads`` count
(default 1 and all cores), ``torch.set_num_threads`` the same for every model within it;
``torch.set_flush_denormal(True)`` for all (DeepCTR's init_std=1e-4 weights could otherwise
produce denormals and slow the peer unfairly).

Scaling (CAMoE only): 1 process x 1 thread, 1 process x 2 threads, and 2 processes x 1 thread
(torch.multiprocessing spawn, gloo, DistributedDataParallel; each worker its own batch of
--batch-size, so a step covers 2 x batch examples). Results: bench/results/train.json / .md
(--quick: train_quick.json / .md).
The load average is recorded: with other processes busy on the cores, multi-threaded numbers
(OpenMP barriers) degrade far more than 1-thread ones, so judge ratios at 1 thread then.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.loss import multitask_bce, task_weights  # noqa: E402
from training.model import FeatureSpec, MultiTaskMoE  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# The demo's categorical features and vocabulary sizes (index 0 = OOV), then 9 dense features.
CATEGORICAL = (("user_id", 20001), ("ad_id", 401), ("campaign_id", 101), ("advertiser_id", 81),
               ("advertiser_category", 13), ("focus_state", 4), ("platform", 4), ("device", 6),
               ("country", 21), ("age_bucket", 8), ("gender", 4), ("content_genre", 13),
               ("headphones", 3), ("hour", 25), ("dow", 8))
NUM_DENSE = 9
TASKS = 2
EXPERTS = 2
EMB = 8
EXPERT_HIDDEN = (128, 64)
TOWER_HIDDEN = (32,)
CROSS_LAYERS = 2
CROSS_RANK = 16
LR = 1e-3


def spec() -> FeatureSpec:
    return FeatureSpec(tuple(c for _, c in CATEGORICAL), NUM_DENSE)


def make_batch(batch_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(0, c, (batch_size,), generator=g) for _, c in CATEGORICAL], 1)
    dense = torch.randn(batch_size, NUM_DENSE, generator=g)
    label = (torch.rand(batch_size, generator=g) < 0.1).long()
    task = torch.randint(0, TASKS, (batch_size,), generator=g)
    # the peer's input: one float matrix [categorical ids..., dense...] (DeepCTR-Torch's format)
    x = torch.cat([categorical.float(), dense], 1)
    y = F.one_hot(task, TASKS).float() * label.float().unsqueeze(1)   # (B, T) per-task labels
    return {"categorical": categorical, "dense": dense, "label": label, "task": task, "x": x, "y": y}


def n_params(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embedding" in n)
    return {"total": total, "embeddings": emb, "dense_layers": total - emb}


# ---------------------------------------------------------------- CAMoE
def camoe_model(cross_layers: int = CROSS_LAYERS) -> nn.Module:
    torch.manual_seed(0)
    return MultiTaskMoE(spec(), tasks=TASKS, experts=EXPERTS, embedding_dim=EMB, expert_hidden=EXPERT_HIDDEN,
                        tower_hidden=TOWER_HIDDEN, cross_layers=cross_layers, cross_rank=CROSS_RANK)


def camoe_step_fn(model: nn.Module, batch: dict, optimizer=None):
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=LR)
    lambdas = task_weights(TASKS)
    model.train()

    def step():
        logits = model(batch["categorical"], batch["dense"])
        loss, _ = multitask_bce(logits, batch["label"], batch["task"], lambdas, alm=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


# ---------------------------------------------------------------- DeepCTR-Torch peer
def _deepctr():
    try:
        import deepctr_torch  # noqa: F401
    except ImportError:
        sys.exit("bench/train.py needs the peer: .venv/bin/pip install --no-deps deepctr-torch")
    import deepctr_torch
    return deepctr_torch


def feature_columns():
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    return ([SparseFeat(name, vocabulary_size=card, embedding_dim=EMB) for name, card in CATEGORICAL]
            + [DenseFeat(f"dense_{i}", 1) for i in range(NUM_DENSE)])


def peer_mmoe_model() -> nn.Module:
    from deepctr_torch.models import MMOE
    return MMOE(feature_columns(), num_experts=EXPERTS, expert_dnn_hidden_units=EXPERT_HIDDEN,
                gate_dnn_hidden_units=(), tower_dnn_hidden_units=TOWER_HIDDEN,
                l2_reg_linear=0.0, l2_reg_embedding=0.0, l2_reg_dnn=0.0,
                task_types=("binary",) * TASKS, task_names=tuple(f"task{t}" for t in range(TASKS)),
                seed=0, device="cpu")


def peer_camoe_model() -> nn.Module:
    """CAMoE from DeepCTR-Torch building blocks, wired like deepctr_torch.models.MMOE."""
    from deepctr_torch.inputs import combined_dnn_input
    from deepctr_torch.layers import DNN, CrossNetMix, PredictionLayer
    from deepctr_torch.models.basemodel import BaseModel

    class DeepCTRCrossMMoE(BaseModel):
        def __init__(self, columns):
            super().__init__(linear_feature_columns=[], dnn_feature_columns=columns, l2_reg_linear=0.0,
                             l2_reg_embedding=0.0, seed=0, device="cpu")
            self.num_tasks, self.num_experts = TASKS, EXPERTS
            d = self.compute_input_dim(columns)
            self.expert_dnn = nn.ModuleList(DNN(d, EXPERT_HIDDEN, activation="relu") for _ in range(EXPERTS))
            self.expert_cross = nn.ModuleList(CrossNetMix(d, low_rank=CROSS_RANK, num_experts=1,
                                                          layer_num=CROSS_LAYERS) for _ in range(EXPERTS))
            self.gate_dnn_final_layer = nn.ModuleList(nn.Linear(d, EXPERTS, bias=False) for _ in range(TASKS))
            expert_dim = d + EXPERT_HIDDEN[-1]
            self.tower_dnn = nn.ModuleList(DNN(expert_dim, TOWER_HIDDEN, activation="relu") for _ in range(TASKS))
            self.tower_dnn_final_layer = nn.ModuleList(nn.Linear(TOWER_HIDDEN[-1], 1, bias=False)
                                                       for _ in range(TASKS))
            self.out = nn.ModuleList(PredictionLayer("binary") for _ in range(TASKS))

        def forward(self, X):   # DeepCTR-Torch's MMOE.forward, expert = [CrossNetMix(x), DNN(x)]
            sparse_embedding_list, dense_value_list = self.input_from_feature_columns(
                X, self.dnn_feature_columns, self.embedding_dict)
            dnn_input = combined_dnn_input(sparse_embedding_list, dense_value_list)
            expert_outs = torch.stack([torch.cat((self.expert_cross[i](dnn_input), self.expert_dnn[i](dnn_input)), -1)
                                       for i in range(self.num_experts)], 1)           # (B, K, d + h)
            task_outs = []
            for i in range(self.num_tasks):
                gate = self.gate_dnn_final_layer[i](dnn_input).softmax(1).unsqueeze(1)   # (B, 1, K)
                mixed = torch.matmul(gate, expert_outs).squeeze(1)                       # (B, d + h)
                logit = self.tower_dnn_final_layer[i](self.tower_dnn[i](mixed))
                task_outs.append(self.out[i](logit))
            return torch.cat(task_outs, -1)                                              # (B, T)

    return DeepCTRCrossMMoE(feature_columns())


def peer_step_fn(model: nn.Module, batch: dict):
    optim = torch.optim.Adam(model.parameters(), lr=LR)
    loss_func = [F.binary_cross_entropy] * TASKS
    x, y = batch["x"], batch["y"]
    model.train()

    def step():   # BaseModel.fit's inner step
        y_pred = model(x)
        optim.zero_grad()
        loss = sum(loss_func[i](y_pred[:, i], y[:, i], reduction="sum") for i in range(TASKS))
        total_loss = loss + model.get_regularization_loss() + model.aux_loss
        total_loss.backward()
        optim.step()
    return step


# ---------------------------------------------------------------- timing
def time_interleaved(steps_fns: dict, batch_size: int, steps: int, repeats: int, warmup: int) -> dict:
    """Median (and best) wall-clock examples/s per model, repetitions interleaved across models.
    Also examples per CPU-second of this process (time.process_time): with other processes busy
    on the machine that one moves much less than wall-clock at 1 thread (at more threads it also
    counts OpenMP spin-waiting)."""
    for fn in steps_fns.values():
        for _ in range(warmup):
            fn()
    wall = {name: [] for name in steps_fns}
    cpu = {name: [] for name in steps_fns}
    for _ in range(repeats):
        for name, fn in steps_fns.items():
            cpu0, started = time.process_time(), time.perf_counter()
            for _ in range(steps):
                fn()
            wall[name].append(batch_size * steps / (time.perf_counter() - started))
            cpu[name].append(batch_size * steps / max(time.process_time() - cpu0, 1e-9))
    return {name: {"examples_per_s": statistics.median(v), "best_examples_per_s": max(v),
                   "examples_per_cpu_s": statistics.median(cpu[name]),
                   "samples": [round(x, 1) for x in v]}
            for name, v in wall.items()}


def _ddp_worker(rank: int, world: int, port: int, args: dict, queue) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(camoe_model())
        step = camoe_step_fn(model, make_batch(args["batch_size"], seed=100 + rank))
        for _ in range(args["warmup"]):
            step()
        rates, cpu_rates = [], []
        for _ in range(args["repeats"]):
            dist.barrier()
            cpu0, started = time.process_time(), time.perf_counter()
            for _ in range(args["steps"]):
                step()
            elapsed = torch.tensor([time.perf_counter() - started, time.process_time() - cpu0], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)     # the step rate is the slowest worker's
            rates.append(args["batch_size"] * args["steps"] / float(elapsed[0]))
            cpu_rates.append(args["batch_size"] * args["steps"] / float(elapsed[1]))
        if rank == 0:
            queue.put((rates, cpu_rates))
    finally:
        dist.destroy_process_group()


def ddp_rates(world: int, batch_size: int, steps: int, repeats: int, warmup: int):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    args = {"batch_size": batch_size, "steps": steps, "repeats": repeats, "warmup": warmup}
    mp.spawn(_ddp_worker, args=(world, port, args, queue), nprocs=world, join=True)
    return queue.get()   # per-worker examples/s (wall, per CPU-s) per repetition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated torch thread counts for the comparison (default: 1 and all cores)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps and repetitions (< ~90 s); writes train_quick.*")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process measurement")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.warmup = min(args.steps, 4), min(args.repeats, 3), min(args.warmup, 2)
    deepctr_torch = _deepctr()
    torch.set_flush_denormal(True)
    wall = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    thread_counts = sorted({int(t) for t in args.threads.split(",")})
    B = args.batch_size
    batch = make_batch(B, seed=1)

    models = {"camoe": camoe_model(), "peer_camoe": peer_camoe_model(),
              "camoe_mlp": camoe_model(cross_layers=0), "peer_mmoe": peer_mmoe_model()}
    fns = {"camoe": camoe_step_fn(models["camoe"], batch), "peer_camoe": peer_step_fn(models["peer_camoe"], batch),
           "camoe_mlp": camoe_step_fn(models["camoe_mlp"], batch),
           "peer_mmoe": peer_step_fn(models["peer_mmoe"], batch)}
    describe = {
        "camoe": "training.model.MultiTaskMoE(experts=2, emb 8, expert_hidden (128,64), tower (32,), "
                 "cross_layers=2, cross_rank=16); multitask_bce ALM; Adam(1e-3)",
        "peer_camoe": "DeepCTR-Torch BaseModel wired as its MMOE.forward; 2 experts each "
                      "[CrossNetMix(d, low_rank=16, num_experts=1, layer_num=2) || DNN(d,(128,64))]; "
                      "bias-free linear softmax gates; towers DNN((32,))+Linear+PredictionLayer; "
                      "BaseModel.fit step (BCE sum + reg loss, L2=0); Adam(1e-3)",
        "camoe_mlp": "training.model.MultiTaskMoE as camoe but cross_layers=0 (MMoE: MLP experts)",
        "peer_mmoe": "deepctr_torch.models.MMOE(num_experts=2, expert (128,64), gate_dnn_hidden_units=(), "
                     "tower (32,), L2=0) unchanged; BaseModel.fit step; Adam(1e-3)",
    }

    comparison, ratios = {}, {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        key = f"threads_{threads}"
        print(f"comparison: {threads} thread(s), batch {B}, {args.repeats} x {args.steps} steps, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        comparison[key] = time_interleaved(fns, B, args.steps, args.repeats, args.warmup)
        for name, r in comparison[key].items():
            print(f"  {name:11s} {r['examples_per_s']:>10,.0f} ex/s (best {r['best_examples_per_s']:,.0f}, "
                  f"{r['examples_per_cpu_s']:,.0f} per CPU-s)", flush=True)
        c = comparison[key]
        ratios[key] = {
            "camoe_over_peer_camoe": c["camoe"]["examples_per_s"] / c["peer_camoe"]["examples_per_s"],
            "camoe_mlp_over_peer_mmoe": c["camoe_mlp"]["examples_per_s"] / c["peer_mmoe"]["examples_per_s"],
            "camoe_over_peer_mmoe": c["camoe"]["examples_per_s"] / c["peer_mmoe"]["examples_per_s"],
            "camoe_over_peer_camoe_best": c["camoe"]["best_examples_per_s"] / c["peer_camoe"]["best_examples_per_s"],
            "camoe_over_peer_camoe_cpu": c["camoe"]["examples_per_cpu_s"] / c["peer_camoe"]["examples_per_cpu_s"],
            "camoe_mlp_over_peer_mmoe_cpu": c["camoe_mlp"]["examples_per_cpu_s"] / c["peer_mmoe"]["examples_per_cpu_s"]}
        for k, v in ratios[key].items():
            print(f"  {k}: {v:.2f}", flush=True)
    models_info = {name: {"params": n_params(m), "config": describe[name]} for name, m in models.items()}

    # scaling: CAMoE, 1 process x 1 thread / x 2 threads, 2 processes x 1 thread (DDP, gloo)
    scaling = {}
    for threads in (1, 2):
        key = f"threads_{threads}"
        if key in comparison:
            r = comparison[key]["camoe"]
        else:
            torch.set_num_threads(threads)
            r = time_interleaved({"camoe": camoe_step_fn(camoe_model(), batch)}, B, args.steps, args.repeats,
                                 args.warmup)["camoe"]
        scaling[f"1proc_{threads}thread"] = r
    if not args.no_ddp:
        per_worker, per_worker_cpu = ddp_rates(2, B, args.steps, args.repeats, args.warmup)
        med = statistics.median(per_worker)
        scaling["2proc_1thread_ddp"] = {"examples_per_s": 2 * med, "per_worker_examples_per_s": med,
                                        "per_worker_examples_per_cpu_s": statistics.median(per_worker_cpu),
                                        "best_examples_per_s": 2 * max(per_worker), "per_worker_batch": B,
                                        "samples_per_worker": [round(s, 1) for s in per_worker]}
    for k, r in scaling.items():
        print(f"  camoe {k:18s} {r['examples_per_s']:>10,.0f} ex/s", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}", flush=True)

    # headline: 1 thread where measured -- with other processes on the cores, multi-threaded
    # (OpenMP) numbers swing by several x between repetitions; see the load averages
    head = "threads_1" if "threads_1" in ratios else f"threads_{max(thread_counts)}"
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "peer": f"deepctr-torch {deepctr_torch.__version__}",
                    "flush_denormal": True, "load_average_start": load_start,
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"batch_size": B, "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
                     "threads": thread_counts, "quick": args.quick, "optimizer": "Adam lr=1e-3",
                     "features": {"categorical": dict(CATEGORICAL), "dense": NUM_DENSE, "tasks": TASKS,
                                  "embedding_dim": EMB, "x0_width": len(CATEGORICAL) * EMB + NUM_DENSE}},
        "same_architecture_comparison": "camoe vs peer_camoe (and camoe_mlp vs peer_mmoe for MLP experts)",
        "models": models_info,
        "comparison": comparison,
        "ratios": ratios,
        "target": {"ratio": 2.0, "headline": f"camoe_over_peer_camoe at {head}",
                   "value": ratios[head]["camoe_over_peer_camoe"],
                   "met": ratios[head]["camoe_over_peer_camoe"] >= 2.0,
                   "met_by_threads": {k: v["camoe_over_peer_camoe"] >= 2.0 for k, v in ratios.items()}},
        "scaling_camoe": scaling,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "train_quick" if args.quick else "train"    # --quick never overwrites the full results
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = list(comparison)
    lines = ["| model | params (total / non-embedding) | "
             + " | ".join(f"ex/s, {k.replace('_', ' ')}" for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for name, info in models_info.items():
        lines.append(f"| {name} | {info['params']['total']:,} / {info['params']['dense_layers']:,} | "
                     + " | ".join(f"{comparison[k][name]['examples_per_s']:,.0f}" for k in keys) + " |")
    lines += ["", "| ratio (median ex/s) | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
              "|---|" + "---|" * len(keys)]
    for label, field in (("camoe / peer_camoe (same architecture; target >= 2.0)", "camoe_over_peer_camoe"),
                         ("camoe_mlp / peer_mmoe (MLP experts; DeepCTR-Torch MMOE as is)", "camoe_mlp_over_peer_mmoe"),
                         ("camoe / peer_camoe, examples per CPU-second (load-robust at 1 thread)",
                          "camoe_over_peer_camoe_cpu")):
        lines.append(f"| {label} | " + " | ".join(f"{ratios[k][field]:.2f}" for k in keys) + " |")
    lines += ["", "| CAMoE scaling | examples/s |", "|---|---|"]
    for k, r in scaling.items():
        extra = f" ({r['per_worker_examples_per_s']:,.0f} per worker)" if "per_worker_examples_per_s" in r else ""
        lines.append(f"| {k} | {r['examples_per_s']:,.0f}{extra} |")
    lines += ["", f"batch {B}, {args.repeats} x {args.steps} steps per model (median), {os.cpu_count()} CPUs, "
                  f"load average {load_start[0]} at start, torch {torch.__version__}, "
                  f"deepctr-torch {deepctr_torch.__version__}" + (" (quick)" if args.quick else "")]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / stem}.json/.md ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
