"""The experiment report's tables and markdown, from slot_metrics rows and the power analysis:
the analogues of the paper's Table 2 (per-slot % change in AUC-PR vs the baseline), Table 3
(task groupings), Table 4 (ECE with and without ALM), Table 5 (DCN / MMoE), the oracle ceiling,
the paired intervals and the per-slot targets. Pure pandas; calibration/experiments.py runs the
experiment and calls these.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# (title, roles, what the paper asks of them); the models are the conf's (experiments.claims.roles)
ABLATIONS = (
    ("Task grouping (paper Tables 2 and 3)", ("one_task", "camoe", "content_tasks", "per_slot_tasks"), None),
    ("Adaptive loss masking (paper Table 4)", ("no_alm", "camoe"), "with and without ALM"),
    ("Experts (paper Table 5)", ("mlp_experts", "camoe"),
     "MLP experts with the x0 skip (MMoE) vs DCN-v2 cross + MLP experts"),
)


def ablations(roles, models, taxonomy) -> list[tuple[str, tuple[str, ...], str, bool]]:
    """The report's ablation tables for this conf: (title, models, what they compare, with the
    ECE table). ``roles``: role -> model; ``models``: model -> ModelSettings. The task-grouping
    table names each model's grouping and tasks from the conf."""
    out = []
    for title, wanted, what in ABLATIONS:
        present = tuple(roles[r] for r in wanted if r in roles)
        if len(present) < 2:
            continue
        if what is None:
            what = " vs ".join(f"{m} = {models[m].grouping} ({'/'.join(taxonomy.grouping(models[m].grouping).tasks)})"
                               for m in present if m in models)
        out.append((title, present, what, "no_alm" in wanted))
    return out


def change_table(metrics: pd.DataFrame, baseline: str, slots: list[str], column: str = "auc_pr") -> pd.DataFrame:
    """Rows: models; columns: slots + all; values: % change of ``column`` vs ``baseline``.

    metrics: calibrated slot_metrics rows with model, level, slot and ``column``. An ``oracle``
    row gives the ceiling: the true click probability scored as a model.
    """
    rows = metrics[metrics["calibrated"] & metrics["level"].isin(["slot", "all"])]
    wide = rows.pivot_table(index="model", columns="slot", values=column, aggfunc="first")
    wide = wide[[s for s in [*slots, "all"] if s in wide.columns]]
    if baseline not in wide.index:
        raise ValueError(f"baseline model {baseline!r} has no rows (models: {sorted(wide.index)})")
    base = wide.loc[baseline]
    change = 100.0 * (wide / base - 1.0)
    if "oracle_auc_pr" in rows.columns and column == "auc_pr":
        oracle = rows.drop_duplicates("slot").set_index("slot")["oracle_auc_pr"].reindex(wide.columns)
        change.loc["oracle"] = 100.0 * (oracle / base - 1.0)
    return change


def ece_table(metrics: pd.DataFrame, models: tuple[str, ...], slots: list[str],
              column: str = "ece_equal_mass") -> pd.DataFrame:
    """A calibration error (equal-mass ECE by default) per slot before and after temperature for ``models``."""
    rows = metrics[metrics["model"].isin(models) & metrics["level"].isin(["slot", "all"])]
    rows = rows.assign(variant=rows["model"] + rows["calibrated"].map({False: " (raw)", True: " (T)"}))
    wide = rows.pivot_table(index="variant", columns="slot", values=column, aggfunc="first")
    return wide[[s for s in [*slots, "all"] if s in wide.columns]]


def pareto_points(power: dict, x_slot: str, y_slot: str) -> pd.DataFrame:
    """Fig. 7: per model, the % AUC-PR change vs the baseline on two slots with its 95% interval
    (``power_analysis``'s comparisons: seed-averaged, paired bootstrap). Columns: model, the two
    changes, and ``<change> lo`` / ``<change> hi``."""
    by_model: dict[str, dict] = {}
    for c in power["comparisons"]:
        if c["metric"] == "auc_pr" and c["segment"] in (x_slot, y_slot):
            by_model.setdefault(c["candidate"], {})[c["segment"]] = c["relative"]
    rows = []
    for model, changes in by_model.items():
        if x_slot in changes and y_slot in changes:
            row = {"model": model}
            for slot in (x_slot, y_slot):
                name = f"{slot} AUC-PR change"
                row.update({name: 100 * changes[slot]["estimate"], f"{name} lo": 100 * changes[slot]["lo"],
                            f"{name} hi": 100 * changes[slot]["hi"]})
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_report(metrics: pd.DataFrame, baseline: str, slots: list[str], header: str = "",
                    ablation_tables=()) -> str:
    """The report: header, Table 2's analogue, the oracle fractions, then ``ablation_tables``
    (``ablations``' tuples)."""
    models = set(metrics["model"])
    with_oracle = "auc_pr_oracle_fraction" in metrics.columns and metrics["auc_pr_oracle_fraction"].notna().any()
    parts = [header,
             f"## AUC-PR, % change vs {baseline} per slot (paper Table 2)"
             + ("; `oracle` = true click probability" if with_oracle else ""),
             _fmt(change_table(metrics, baseline, slots), "{:+.1f}")]
    if with_oracle:
        fraction = metrics[metrics["calibrated"] & (metrics["level"] == "slot")].pivot_table(
            index="model", columns="slot", values="auc_pr_oracle_fraction", aggfunc="first")
        parts += ["## AUC-PR as a fraction of the oracle's",
                  _fmt(fraction[[s for s in slots if s in fraction.columns]], "{:.3f}")]
    else:
        parts.append("The log has no true click probability (true_ctr): the oracle, the learnable ceiling and "
                     "the label-free metrics are left out; every comparison is on the logged clicks.")
    for title, names, what, with_ece in ablation_tables:
        present = [m for m in names if m in models]
        if len(present) < 2:
            continue
        table = change_table(metrics, baseline, slots).loc[present]
        parts += [f"## {title}: {what}; AUC-PR % change vs {baseline}", _fmt(table, "{:+.1f}")]
        if with_ece:                              # the paper's ALM table reports calibration too
            parts += ["ECE (equal-mass bins, plug-in) before (raw) and after (T) temperature scaling:",
                      _fmt(ece_table(metrics, tuple(present), slots), "{:.5f}")]
            if "rms_ce_debiased" in metrics.columns and metrics["rms_ce_debiased"].notna().any():
                parts += ["The same with the estimation noise taken out (RMS calibration error, debiased: "
                          "`core.metrics.debiased_squared_calibration_error`):",
                          _fmt(ece_table(metrics, tuple(present), slots, "rms_ce_debiased"), "{:.5f}")]
    return "\n\n".join(p for p in parts if p) + "\n"


def loss_name(settings) -> str:
    if settings.alm:
        return f"ALM ({settings.alm_normalization})"
    return "no ALM"


def _fmt(frame: pd.DataFrame, number: str) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for index, row in frame.iterrows():
        cells = ["" if pd.isna(v) else number.format(v) for v in row.values]
        lines.append(f"| {index} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval_cell(relative: dict) -> str:
    """'+2.1 [-1.0, +5.3]' in % points; bold when the interval excludes 0."""
    if not np.isfinite(relative["lo"]):
        return ""
    cell = f"{100 * relative['estimate']:+.1f} [{100 * relative['lo']:+.1f}, {100 * relative['hi']:+.1f}]"
    return f"**{cell}**" if relative["lo"] > 0 or relative["hi"] < 0 else cell


# metrics whose value can be ~0 (or, debiased, below it): a % change of them says nothing
ABSOLUTE_CHANGE_METRICS = ("squared_ce_debiased",)


def _claim_cell(claim: dict) -> str:
    """The claim's change as its verdict reads it: % for most metrics, absolute for those above."""
    if claim["metric"] not in ABSOLUTE_CHANGE_METRICS:
        return _interval_cell(claim["relative"]).replace("**", "")
    a = claim["absolute"]
    return "" if not np.isfinite(a["lo"]) else f"{a['estimate']:+.2g} [{a['lo']:+.2g}, {a['hi']:+.2g}] (absolute)"


def power_markdown(power: dict, baseline: str, slots: list[str], seeds: dict[str, list[int]]) -> str:
    """The report's interval tables: changes vs the baseline, the claims, the achieved widths."""
    from calibration.power import is_masked_variant

    parts = []
    for key, versus in (("comparisons", baseline), ("sampling", "the same model on conf/data.yaml's rates")):
        comparisons = pd.DataFrame(power.get(key, []))
        if comparisons.empty:
            continue
        columns = [s for s in [*slots, "all"] if s in set(comparisons["segment"])]
        what = "Sampling ablation, " if key == "sampling" else ""
        for metric, title in (("auc_pr", "AUC-PR"),
                              ("excess_log_loss", "excess log loss vs true_ctr (lower is better)"),
                              ("true_calibration_ratio", "calibration ratio vs true_ctr")):
            part = comparisons[comparisons["metric"] == metric]
            if part.empty or (metric == "true_calibration_ratio" and key != "sampling"):
                continue
            table = part.pivot_table(index="candidate", columns="segment", values="relative", aggfunc="first")
            table = table[[c for c in columns if c in table.columns]].map(_interval_cell)
            parts += [f"## {what}{title}: % change vs {versus} with 95% CI (over test impressions and "
                      f"training seeds; bold: the interval excludes 0)", _fmt(table, "{}")]
    if power["claims"]:
        lines = ["| claim | paper | segment | metric | paper's change % "
                 "| our change % [95% CI] (absolute where marked) | verdict |",
                 "|---|---|---|---|---:|---|---|"]
        for c in power["claims"]:
            cell = _claim_cell(c)
            paper = "" if c.get("paper_change_pct") is None else f"{c['paper_change_pct']:+.1f}"
            lines.append(f"| {c['claim']} ({c['candidate']} vs {c['reference']}) | {c['source']} | {c['segment']} | "
                         f"{c['metric']} | {paper} | {cell} | {c['verdict']} |")
        parts += ["## The paper's claims: confirmed when the interval lies on the better side of 0, refuted "
                  "when on the worse side, unresolved when it covers 0",
                  "Intervals: the seed-averaged change, its variance the test rows' part common to the seeds "
                  "(bootstrap) plus the seeds' spread, with a Student t multiplier on k - 1 (seeds dominate) to "
                  "infinite (rows dominate) degrees of freedom (`calibration/bootstrap.py`); seed s of two models "
                  "is paired where both ran "
                  "the same seeds. A masked expert's scores are recalibrated with temperatures fitted for them "
                  "on validation.", "\n".join(lines)]
    if power.get("claims_not_judged"):
        parts += ["Claims not judged here:", "\n".join(f"- {c['claim']} ({c['source']}): {c['reason']}"
                                                    for c in power["claims_not_judged"])]
    if power["auc_pr_change_half_width"]:
        parts.append("Achieved half-width of the AUC-PR change intervals (percentage points; target <= 3): "
                     + ", ".join(f"{slot} max {w['max_points']:.1f} (mean {w['mean_points']:.1f})"
                                 for slot, w in power["auc_pr_change_half_width"].items())
                     + ". Seeds per model: " + ", ".join(f"{m} {s}" for m, s in sorted(seeds.items())
                                                    if not is_masked_variant(m)) + ".")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- the benchmark's targets
CEILING_SIGNAL_TARGET = 0.95            # gain(model) >= 0.95 gain(ceiling), gain = LL(slot base rate) - LL(x)
TRUE_CALIBRATION_BOUNDS = (0.95, 1.05)  # sum(pCTR) / sum(true_ctr) per slot after temperature


def base_rate_precision(train_clicks: float | None) -> float | None:
    """The relative 95% half-width with which a slot's training clicks pin its CTR: 1.96 /
    sqrt(clicks) (a Poisson count). No model trained on that window can place the slot's mean
    pCTR closer to the truth than this, so a calibration ratio outside [0.95, 1.05] but within
    1 +- this is the training data's limit, not the model's."""
    return 1.96 / math.sqrt(train_clicks) if train_clicks else None


def target_checks(summary: dict, model: str, slots: list[str],
                  train_clicks: dict[str, float] | None = None) -> list[dict]:
    """Per slot (seed-averaged ``model_slot_summary``): does ``model`` capture >= 0.95 of the
    ceiling's signal and is its calibration ratio against true_ctr within [0.95, 1.05]? With
    ``train_clicks`` (slot -> clicks in the training window, "all" for the total) each check also
    carries ``base_rate_precision`` and whether the ratio lies within it.
    Empty when the model was not run or the log has no true_ctr."""
    lo, hi = TRUE_CALIBRATION_BOUNDS
    out = []
    for slot in [*slots, "all"]:
        values = summary.get(model, {}).get(slot)
        if not values or values.get("signal_fraction_of_ceiling") is None:
            continue
        fraction, ratio = values["signal_fraction_of_ceiling"], values.get("true_calibration_ratio")
        clicks = (train_clicks or {}).get(slot)
        precision = base_rate_precision(clicks)
        out.append({"slot": slot, "rows": values.get("rows"), "positives": values.get("positives"),
                    "signal_fraction_of_ceiling": fraction, "meets_ceiling_target": fraction >= CEILING_SIGNAL_TARGET,
                    "true_calibration_ratio": ratio,
                    "calibration_within_bounds": ratio is not None and lo <= ratio <= hi,
                    "train_clicks": clicks, "base_rate_precision": precision,
                    "calibration_within_precision": None if precision is None or ratio is None
                    else abs(ratio - 1.0) <= precision})
    return out


def targets_markdown(checks: list[dict], model: str) -> str:
    if not checks:
        return ""
    lines = [f"## {model}: share of the ceiling's signal (target >= {CEILING_SIGNAL_TARGET}) and calibration "
             f"vs true_ctr after temperature (target {TRUE_CALIBRATION_BOUNDS[0]}-{TRUE_CALIBRATION_BOUNDS[1]}), "
             "seed means",
             "",
             "The last two columns: how closely the slot's training clicks pin its CTR (1.96 / sqrt(train "
             "clicks)), and whether the calibration ratio lies within 1 +- that; a ratio outside the target "
             "but inside it misses for want of training data.",
             "",
             "| slot | test rows | clicks | signal / ceiling | met | sum pCTR / sum true_ctr | met "
             "| train clicks | +- | within |",
             "|---|---:|---:|---:|---|---:|---|---:|---:|---|"]
    for c in checks:
        ratio = "" if c["true_calibration_ratio"] is None else f"{c['true_calibration_ratio']:.3f}"
        clicks = "" if c.get("train_clicks") is None else f"{c['train_clicks']:,.0f}"
        precision = "" if c.get("base_rate_precision") is None else f"{c['base_rate_precision']:.3f}"
        within = {None: "", True: "yes", False: "no"}[c.get("calibration_within_precision")]
        lines.append(f"| {c['slot']} | {c['rows'] or 0:,.0f} | {c['positives'] or 0:,.0f} | "
                     f"{c['signal_fraction_of_ceiling']:.3f} | {'yes' if c['meets_ceiling_target'] else 'no'} | "
                     f"{ratio} | {'yes' if c['calibration_within_bounds'] else 'no'} | {clicks} | {precision} "
                     f"| {within} |")
    return "\n".join(lines)
