"""PNG figures from evaluation tables (pandas frames read back from Delta); Agg backend, no display."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)


def reliability_diagrams(bins, out: Path, scheme: str = "equal_mass") -> Path:
    """One panel per slot: observed CTR vs mean pCTR per bin, before and after temperature.

    bins: calibration_bins rows (level, slot, calibrated, scheme, bin, mean_pctr, observed_ctr, rows).
    """
    rows = bins[(bins["level"] == "slot") & (bins["scheme"] == scheme)]
    slots = sorted(rows["slot"].unique())
    cols = min(4, max(1, len(slots)))
    nrows = (len(slots) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.6 * nrows), squeeze=False)
    for ax, slot in zip(axes.flat, slots):
        top = 0.0
        for calibrated, style in ((False, "o--"), (True, "s-")):
            part = rows[(rows["slot"] == slot) & (rows["calibrated"] == calibrated)].sort_values("bin")
            ax.plot(part["mean_pctr"], part["observed_ctr"], style, ms=3,
                    label="after temperature" if calibrated else "before temperature")
            top = max(top, part["mean_pctr"].max(), part["observed_ctr"].max())
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        ax.set_title(slot, fontsize=9)
        ax.set_xlabel("mean pCTR")
        ax.set_ylabel("observed CTR")
    for ax in list(axes.flat)[len(slots):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Reliability per slot ({scheme.replace('_', '-')} bins)")
    fig.tight_layout()
    return _save(fig, out)


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
    """Fig. 7: each model's % AUC-PR change on two slots (points: model, x, y columns)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(points[x], points[y])
    for _, r in points.iterrows():
        ax.annotate(r["model"], (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(f"{x} (%)")
    ax.set_ylabel(f"{y} (%)")
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
