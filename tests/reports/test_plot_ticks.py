"""Plot ticks people can read: a narrow parameter band shows distinct whole numbers (not nine "489K"),
trial axes have whole trial numbers, and proxy AP has no offset notation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from featherface_tune.reports.plots import _fmt_axis  # noqa: E402


def _labels(ax, axis: str) -> list[str]:
    ax.figure.canvas.draw()
    which = getattr(ax, f"{axis}axis")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    return [t.get_text() for t, v in zip(which.get_ticklabels(), which.get_majorticklocs()) if lo <= v <= hi]


@pytest.mark.parametrize("lo, hi", [(488_999, 489_001), (488_500, 489_500), (400_000, 600_000)])
def test_parameter_ticks_are_distinct_whole_counts(lo, hi):
    fig, ax = plt.subplots()
    ax.set_xlim(lo, hi)
    _fmt_axis(ax, "x", "params")
    labels = _labels(ax, "x")
    plt.close(fig)
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert all("." not in s for s in labels), labels


def test_trial_ticks_are_whole_and_ap_has_no_offset():
    fig, ax = plt.subplots()
    ax.scatter([0, 1, 2], [0.0001, 0.0002, 0.0003])
    ax.set_xlim(-0.5, 2.5)
    _fmt_axis(ax, "x", "trial")
    _fmt_axis(ax, "y", "proxy_ap")
    xs, ys = _labels(ax, "x"), _labels(ax, "y")
    offset = ax.yaxis.get_offset_text().get_text()
    plt.close(fig)
    assert xs == ["0", "1", "2"], xs
    assert offset == "" and "0.0003" in ys, ys
