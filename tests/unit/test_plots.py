"""Reliability diagrams carry each bin's count and a Wilson interval; every figure is read back
from its PNG: its pixel size, its panels and the colours its series are drawn in (pure pandas +
matplotlib, no Spark)."""
from __future__ import annotations

import matplotlib.colors
import matplotlib.image
import numpy as np
import pandas as pd

from calibration import plots
from calibration.plots import auc_pr_change_bars, bin_intervals, pareto, reliability_diagrams
from core.metrics import reliability_bins, wilson_interval

SAVE_DPI = 110                                   # calibration.plots._save writes every figure at it
# the second slot: a handful of clicks per bin
TWO_SLOTS = (("stream_audio", 50_000), ("podcast_video", 800))


def _calibration_bins(seed: int = 0, slots=TWO_SLOTS, bins: int = 15) -> pd.DataFrame:
    """calibration_bins-shaped rows per (slot, rows), before (over-predicting) and after temperature."""
    rng = np.random.default_rng(seed)
    rows = []
    for slot, n in slots:
        t = rng.beta(1, 40, n)
        y = rng.random(n) < t
        for calibrated, p in ((False, np.clip(1.5 * t, 0, 1)), (True, t)):
            for b in reliability_bins(y, p, bins, "equal_mass"):
                rows.append(dict(level="slot", slot=slot, calibrated=calibrated, scheme="equal_mass", bin=b["bin"],
                                 rows=b["rows"], sum_pred=b["sum_pred"], sum_label=b["sum_label"],
                                 mean_pctr=b["sum_pred"] / b["rows"], observed_ctr=b["sum_label"] / b["rows"]))
    return pd.DataFrame(rows)


def test_bin_intervals_are_wilson_intervals_around_the_observed_rate():
    frame = _calibration_bins()
    got = bin_intervals(frame)
    lo, hi = wilson_interval(frame["sum_label"], frame["rows"])
    np.testing.assert_allclose(got["lo"], lo)
    np.testing.assert_allclose(got["hi"], hi)
    assert ((got["lo"] <= frame["observed_ctr"]) & (frame["observed_ctr"] <= got["hi"])).all()
    # no click / every row clicked: the rate is an end of the interval, never outside it by
    # rounding (a real log's empty bin made the reliability diagram's error bars negative)
    trials = np.arange(1, 5000, dtype=float)
    for clicks in (np.zeros_like(trials), trials):
        lo, hi = wilson_interval(clicks, trials)
        assert (lo <= clicks / trials).all() and (clicks / trials <= hi).all()
    # without sum_label (older calibration_bins rows) clicks come from observed_ctr x rows
    again = bin_intervals(frame.drop(columns=["sum_label"]))
    np.testing.assert_allclose(again["hi"], got["hi"])
    np.testing.assert_allclose(again["clicks"], frame["sum_label"])
    # small bins: wide intervals (the podcast_video zig-zag is noise)
    small = got[frame["slot"] == "podcast_video"]
    large = got[frame["slot"] == "stream_audio"]
    assert (small["hi"] - small["lo"]).median() > 5 * (large["hi"] - large["lo"]).median()


def read_png(path, figsize) -> np.ndarray:
    """The saved image (rows, columns, RGBA in [0, 1]), checked to be figsize x the save dpi and
    not blank: drawn in more than a few colours."""
    image = matplotlib.image.imread(path)
    width, height = figsize
    assert image.shape == (round(height * SAVE_DPI), round(width * SAVE_DPI), 4)
    colours = np.round(image * 255).astype(np.uint8).view(np.uint32)       # one RGBA word per pixel
    assert image.std() > 0.02 and np.unique(colours).size > 50
    return image


def pixels_of(image: np.ndarray, colour: str) -> np.ndarray:
    """(rows, columns) mask of the pixels painted exactly ``colour`` (a marker's or a bar's inside)."""
    return np.all(np.abs(image[..., :3] - np.array(matplotlib.colors.to_rgb(colour))) < 0.5 / 255, axis=2)


def saved_figures(monkeypatch) -> list:
    """The figures the plot functions save (they close them and return only the path)."""
    figures = []
    save = plots._save

    def keep(fig, out):
        figures.append(fig)
        return save(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_reliability_diagrams_keep_their_call_signature(tmp_path):
    """Breakage caught: an empty or blank figure, or a size other than two 4.4 x 4.0 in panels
    side by side at the save dpi."""
    frame = _calibration_bins()
    for out in (reliability_diagrams(frame, tmp_path / "reliability.png"),
                reliability_diagrams(frame.drop(columns=["sum_label"]), tmp_path / "r2.png", "equal_mass")):
        read_png(out, (2 * 4.4, 4.0))


def test_reliability_diagrams_draw_one_panel_per_slot_with_both_series(tmp_path, monkeypatch):
    """Five slots: a grid of 4 columns x 2 rows, the last three cells blank. Breakage caught: a
    slot without its panel (or a spare cell drawn), another grid, a panel missing its before or
    after temperature series (tab:blue, tab:orange markers)."""
    slots = tuple((name, 3000) for name in ("s1", "s2", "s3", "s4", "s5"))
    figures = saved_figures(monkeypatch)
    out = reliability_diagrams(_calibration_bins(1, slots, bins=4), tmp_path / "grid.png")
    image = read_png(out, (4 * 4.4, 2 * 4.0))
    (fig,) = figures
    assert len(fig.axes) == 8 and [ax.axison for ax in fig.axes] == [True] * 5 + [False] * 3
    height, width = image.shape[:2]
    for ax in fig.axes:
        box = ax.get_position()                                  # figure fractions, y from the bottom
        panel = image[round((1 - box.y1) * height):round((1 - box.y0) * height),
                      round(box.x0 * width):round(box.x1 * width)]
        drawn = [pixels_of(panel, colour).any() for colour in ("tab:blue", "tab:orange")]
        assert drawn == ([True, True] if ax.axison else [False, False])
        assert ax.axison or (panel == 1).all()                   # a spare cell stays white


def test_auc_pr_change_bars_draw_gains_green_above_and_losses_red_below(tmp_path, monkeypatch):
    """Breakage caught: a blank or resized figure, bars of the wrong colour or sign (a gain
    drawn red, or below the zero line), rows of another level or uncalibrated ones plotted."""
    metrics = pd.DataFrame({"level": ["slot", "slot", "slot", "slot", "all"],
                            "calibrated": [True, True, True, False, True],
                            "slot": ["s1", "s2", "s3", "s1", "all"],
                            "auc_pr_change_pct": [5.0, -3.0, np.nan, 9.0, 1.0]})
    figures = saved_figures(monkeypatch)
    image = read_png(auc_pr_change_bars(metrics, tmp_path / "bars.png", "baseline"), (8, 3.6))
    (fig,) = figures
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["s1", "s2", "s3"]
    assert [bar.get_height() for bar in ax.patches] == [5.0, -3.0, 0.0]
    green, red = (np.nonzero(pixels_of(image, c))[0] for c in ("tab:green", "tab:red"))
    assert green.size and red.size and green.max() < red.min()    # image rows count downwards


def test_pareto_draws_each_model_with_its_interval_bars(tmp_path, monkeypatch):
    """Breakage caught: a blank or resized figure, interval columns given but no error bars, a
    model without its point or label."""
    points = pd.DataFrame({"model": ["a", "b"], "x": [1.0, -2.0], "x lo": [0.0, -3.0], "x hi": [2.0, -1.0],
                           "y": [0.5, 1.5], "y lo": [0.0, 1.0], "y hi": [1.0, 2.0]})
    figures = saved_figures(monkeypatch)
    image = read_png(pareto(points, tmp_path / "pareto.png", "x", "y"), (5.5, 4.5))
    (fig,) = figures
    (ax,) = fig.axes
    (bars,) = ax.containers
    assert bars.has_xerr and bars.has_yerr and len(bars.lines[0].get_xdata()) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b"]
    assert pixels_of(image, "tab:blue").any()
