"""PNG figures from evaluation tables (pandas frames read back from Delta); Agg backend, no display."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from core.metrics import wilson_interval  # noqa: E402


def reliability_diagrams(bins, out: Path, scheme: str = "equal_mass", confidence: float = 0.95) -> Path:
    """One panel per slot: observed CTR vs mean pCTR per bin, before and after temperature.

    bins: calibration_bins rows (level, slot, calibrated, scheme, bin, mean_pctr, observed_ctr,
    rows; sum_label when present, else clicks = observed_ctr x rows). Each point carries the
    Wilson ``confidence`` interval of its observed click rate and is labelled clicks/rows, so a
    bin of a handful of clicks reads as noise, not as miscalibration: a calibrated bin's
    interval crosses the diagonal.
    """
    rows = bins[(bins["level"] == "slot") & (bins["scheme"] == scheme)]
    slots = sorted(rows["slot"].unique())
    cols = min(4, max(1, len(slots)))
    nrows = (len(slots) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 4.0 * nrows), squeeze=False)
    for ax, slot in zip(axes.flat, slots):
        top, labelled = 0.0, None
        for calibrated, style in ((False, "o--"), (True, "s-")):
            part = rows[(rows["slot"] == slot) & (rows["calibrated"] == calibrated)].sort_values("bin")
            if part.empty:
                continue
            interval = bin_intervals(part, confidence)
            ax.errorbar(part["mean_pctr"], part["observed_ctr"],
                        yerr=[part["observed_ctr"] - interval["lo"], interval["hi"] - part["observed_ctr"]],
                        fmt=style, ms=3, capsize=2, elinewidth=0.7, lw=1,
                        label="after temperature" if calibrated else "before temperature")
            top = max(top, part["mean_pctr"].max(), part["observed_ctr"].max())
            labelled = (part, interval)
        if labelled is not None:                 # counts once per bin: both series share the rows
            part, interval = labelled
            for x, hi, clicks, n in zip(part["mean_pctr"], interval["hi"], interval["clicks"], part["rows"]):
                ax.annotate(f"{clicks:.0f}/{_compact(n)}", (x, min(hi, 1.25 * top)), fontsize=5, rotation=90,
                            ha="center", va="bottom", xytext=(0, 2), textcoords="offset points", color="dimgrey")
            total_rows, total_clicks = int(part["rows"].sum()), int(round(interval["clicks"].sum()))
            ax.set_title(f"{slot}: {total_clicks:,} clicks / {total_rows:,} rows", fontsize=9)
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        # long intervals of near-empty bins would flatten every other point; they run off the top
        ax.set_ylim(0, 1.4 * top if top > 0 else 1)
        ax.set_xlabel("mean pCTR")
        ax.set_ylabel("observed CTR")
    for ax in list(axes.flat)[len(slots):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    pct = f"{100 * confidence:g}%"
    fig.suptitle(f"Reliability per slot ({scheme.replace('_', '-')} bins); bars: {pct} Wilson interval "
                 f"of the observed CTR; labels: clicks/rows per bin", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def bin_intervals(part, confidence: float = 0.95):
    """Per calibration_bins row: clicks and the Wilson interval (lo, hi) of the observed CTR (a frame)."""
    import pandas as pd

    clicks = part["sum_label"] if "sum_label" in part.columns else part["observed_ctr"] * part["rows"]
    lo, hi = wilson_interval(clicks.to_numpy(float), part["rows"].to_numpy(float), confidence)
    return pd.DataFrame({"clicks": clicks.to_numpy(float), "lo": lo, "hi": hi}, index=part.index)


def _compact(n) -> str:
    """12345 -> '12k', 1234567 -> '1.2M': bin sizes short enough to label a point."""
    n = float(n)
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= limit:
            value = n / limit
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return f"{n:.0f}"


def auc_pr_change_bars(metrics, out: Path, baseline: str) -> Path:
    """Per slot, % change in AUC-PR vs the baseline run (calibrated rows)."""
    rows = metrics[(metrics["level"] == "slot") & metrics["calibrated"]].sort_values("slot")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    values = rows["auc_pr_change_pct"].fillna(0.0)
    ax.bar(rows["slot"], values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"AUC-PR change vs {baseline} (%)")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    return _save(fig, out)


def pareto(points, out: Path, x: str, y: str) -> Path:
    """Fig. 7: each model's % AUC-PR change on two slots (points: model, x, y columns), with
    95% interval bars where ``<x> lo``/``<x> hi`` and ``<y> lo``/``<y> hi`` columns are given."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if {f"{x} lo", f"{x} hi", f"{y} lo", f"{y} hi"} <= set(points.columns):
        def bars(c: str):                     # (2, n) arrays: matplotlib warns on single-row Series
            v = points[c].to_numpy(float)
            return np.vstack([v - points[f"{c} lo"].to_numpy(float), points[f"{c} hi"].to_numpy(float) - v])

        ax.errorbar(points[x].to_numpy(float), points[y].to_numpy(float), fmt="o", capsize=3, lw=0.8,
                    xerr=bars(x), yerr=bars(y))
    else:
        ax.scatter(points[x], points[y])
    for _, r in points.iterrows():
        ax.annotate(r["model"], (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(f"{x} (%, 95% CI)" if f"{x} lo" in points.columns else f"{x} (%)")
    ax.set_ylabel(f"{y} (%, 95% CI)" if f"{y} lo" in points.columns else f"{y} (%)")
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
