"""The charts of the reports (bar, line and horizontal-bar charts, and the ones each report draws),
on the plumbing of :mod:`.plotting`; :mod:`.figures` lists every figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from .plotting import DPI, PALETTE, _figure, _finite, _legend_above, _long_labels, _nan, _styled, _wrap, save

__all__ = [
    "bar_chart",
    "hbar_chart",
    "line_chart",
    "missing_modality_chart",
    "noise_chart",
    "similarity_chart",
    "training_curves",
]


# ---------------------------------------------------------------------------------------------------
# generic charts


@_styled
def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    xlabel: str = "",
    ymax: float | None = None,
    size: tuple[int, int] | None = None,
    errors: Mapping[str, Sequence[float | None]] | None = None,
    value_labels: bool | None = None,
    reference: tuple[str, float] | None = None,
    legend: bool | None = None,
    formats: Sequence[str] | None = None,
) -> Path:
    """Grouped bars: one group per label of ``groups``, one bar per series (in :data:`PALETTE` order).

    Args:
        series: ``{name: one value per group}``; None / NaN leaves a gap.
        ymax: Top of the y axis (default: the data's maximum plus room for the value labels).
        size: Figure size in pixels (default: grows with the number of bars).
        errors: ``{name: one half-width per group}`` drawn as error bars (e.g. the std over seeds).
        value_labels: Print each value above its bar (default: when there are at most 30 bars).
        reference: ``(label, y)`` of a dashed horizontal line (e.g. the clean mIoU).
        legend: Name the series above the plot (default: when there are several, or a reference).
        formats: See :func:`save`.
    """
    n_g, n_s = len(groups), max(len(series), 1)
    rotate = _long_labels(groups, 6 + 2.2 * n_s)
    if size:
        w, h = size[0] / DPI, size[1] / DPI
    else:
        w = min(16.0, max(5.5, 1.4 + n_g * (0.24 * n_s + 0.3)))
        h = 3.6 + (0.5 if rotate else 0.0) + (0.2 if n_s > 4 else 0.0)
    fig = _figure(w, h)
    ax = fig.add_subplot()
    x = np.arange(n_g)
    width = 0.8 / n_s
    labels = value_labels if value_labels is not None else n_g * n_s <= 30
    values: list[float] = []  # every bar's end, error bars included: the y range
    for k, (name, vals) in enumerate(series.items()):
        ys = np.array([_nan(v) for v in vals])
        err = None
        if errors and name in errors:
            err = np.array([_nan(e) for e in errors[name]])
            err = np.where(np.isfinite(err), err, 0.0)
        spread = err if err is not None else np.zeros_like(ys)
        values += _finite([*(ys + spread), *(ys - spread)])
        bars = ax.bar(
            x + (k - (n_s - 1) / 2) * width,
            ys,
            width * 0.92,
            label=name,
            color=PALETTE[k % len(PALETTE)],
            yerr=err,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"},
        )
        if labels:  # above the bar and its error bar (below, for a negative value)
            for rect, v, e in zip(bars, ys, spread):
                if math.isfinite(v):
                    up = v >= 0
                    ax.annotate(
                        f"{v:.1f}",
                        (rect.get_x() + rect.get_width() / 2, v + (e if up else -e)),
                        xytext=(0, 3.5 if up else -3.5),  # clear of the label box (pad 0.5 em)
                        textcoords="offset points",
                        ha="center",
                        va="bottom" if up else "top",
                        fontsize=6.5,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.9},
                        zorder=4,
                    )
    lo = min([0.0, *values])
    hi = ymax if ymax is not None else (max([*values, 0.0]) * (1.15 if labels else 1.05) or 1.0)
    ax.set_ylim(lo - (0.1 if labels else 0.03) * (hi - lo) if lo < 0 else 0.0, hi)
    if lo < 0:
        ax.axhline(0.0, color="#555555", linewidth=0.8)
    if reference is not None:
        ax.axhline(
            reference[1], color="#555555", linestyle="--", linewidth=0.9, label=reference[0], zorder=1.5
        )
    ax.set_xticks(
        x,
        list(groups),
        rotation=35 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor" if rotate else "default",
    )
    ax.set_xlim(-0.6, n_g - 0.4)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        fig.suptitle(_wrap(title, fig.get_figwidth()))
    if legend or (legend is None and (n_s > 1 or reference is not None)):
        _legend_above(ax, n_s + (reference is not None))
    return save(fig, path, formats)


@_styled
def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (960, 540),
    logy: bool = False,
    formats: Sequence[str] | None = None,
) -> Path:
    """One line per ``name -> (xs, ys)`` (markers when short), with a legend; ``size`` in pixels."""
    fig = _figure(size[0] / DPI, size[1] / DPI)
    ax = fig.add_subplot()
    _lines(ax, series, logy=logy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(_wrap(title, fig.get_figwidth() * 0.8, 10))
    if len(series) > 1:
        ax.legend(frameon=False)
    return save(fig, path, formats)


def _lines(ax: Any, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, logy: bool) -> None:
    for k, (name, (xs, ys)) in enumerate(series.items()):
        pts = [(x, _nan(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(_nan(y))]
        if logy:
            pts = [(x, y) for x, y in pts if y > 0]
        if not pts:
            continue
        px, py = zip(*pts)
        ax.plot(
            px,
            py,
            label=name,
            color=PALETTE[k % len(PALETTE)],
            linewidth=1.4,
            marker="o" if len(pts) <= 30 else None,
            markersize=3.5,
        )
    if logy:
        ax.set_yscale("log")
    ax.grid(True, axis="both", color="#e6e6e6", linewidth=0.6)


@_styled
def hbar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    path: str | Path,
    *,
    xlabel: str = "",
    title: str = "",
    xmax: float | None = 100.0,
    missing: str = "absent",
    color: str = PALETTE[0],
    formats: Sequence[str] | None = None,
) -> Path:
    """Horizontal bars, one per label (top to bottom in the given order), the value printed beside each;
    a None value is written as ``missing`` instead of a bar (e.g. a class that never occurs)."""
    n = len(labels)
    fig = _figure(6.4, 0.9 + 0.24 * max(n, 2))
    ax = fig.add_subplot()
    y = np.arange(n)
    vals = np.array([_nan(v) for v in values])
    ax.barh(y, np.where(np.isfinite(vals), vals, 0.0), 0.72, color=color)
    top = xmax if xmax is not None else max([*_finite(list(vals)), 1.0]) * 1.12
    for yi, v in zip(y, vals):
        text = f"{v:.1f}" if math.isfinite(v) else missing
        ax.text(
            (v if math.isfinite(v) else 0.0) + top * 0.01,
            yi,
            text,
            va="center",
            fontsize=7,
            color="#222222" if math.isfinite(v) else "#777777",
        )
    ax.set_yticks(y, list(labels))
    ax.invert_yaxis()
    ax.set_xlim(0.0, top * (1.08 if xmax is not None else 1.0))
    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(True, axis="x")
    ax.grid(False, axis="y")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(_wrap(title, fig.get_figwidth() * 0.8, 10), loc="left")
    return save(fig, path, formats)


# ---------------------------------------------------------------------------------------------------
# the reports' charts


def _loss_label(key: str, lambda_sgm: float | None) -> str:
    if key == "loss":
        return "total"
    if key == "loss_ce":
        return "cross-entropy"
    if key == "loss_sgm":
        return "SGM (before λ" + (f" = {lambda_sgm:g})" if lambda_sgm is not None else ")")
    return key.removeprefix("loss_").replace("_", " ")


@_styled
def training_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    lambda_sgm: float | None = None,
    title: str = "",
    formats: Sequence[str] | None = None,
) -> Path:
    """Training curves from a run's ``log.jsonl`` records: every loss term (log scale; a term that is 0
    throughout, e.g. SGM of a peer, is left out), the learning rate and the validation mIoU, each
    against the iteration.

    Args:
        records: Training records (``iter``, ``lr``, ``loss``, ``loss_ce``, ``loss_sgm`` ...) and
            validation records (``iter``, ``val: {"mIoU", ...}``), as the trainer logs them.
        lambda_sgm: λ of the SGM loss, for the legend.
    """
    train = [r for r in records if "loss" in r and "iter" in r]
    val = [r for r in records if "val" in r and "iter" in r]
    panels = 2 + bool(val)
    fig = _figure(4.0 * panels, 3.3)
    axes = fig.subplots(1, panels, squeeze=True)
    its = [r["iter"] for r in train]
    keys = [k for k in dict.fromkeys(k for r in train for k in r) if k.startswith("loss")]
    loss_series = {
        _loss_label(k, lambda_sgm): (its, [r.get(k) for r in train])
        for k in keys
        if any((r.get(k) or 0) > 0 for r in train)
    }
    _lines(axes[0], loss_series, logy=True)
    axes[0].set(title="loss terms", xlabel="iteration", ylabel="loss (log scale)")
    if loss_series:
        axes[0].legend(frameon=False)
    _lines(axes[1], {"lr": (its, [r.get("lr") for r in train])}, logy=False)
    axes[1].set(title="learning rate", xlabel="iteration", ylabel="learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if val:
        _lines(axes[2], {"val mIoU": ([r["iter"] for r in val], [r["val"]["mIoU"] for r in val])}, logy=False)
        axes[2].set(title="validation mIoU", xlabel="iteration", ylabel="mIoU (%)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if its:
            ax.set_xlim(0, max([*its, *(r["iter"] for r in val)]) * 1.02)
    if title:
        fig.suptitle(_wrap(title, fig.get_figwidth()))
    return save(fig, path, formats)


def missing_modality_chart(
    combinations: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    abbreviations: Mapping[str, str] | None = None,
    clean: float | None = None,
    title: str = "mIoU per set of present modalities",
    formats: Sequence[str] | None = None,
) -> Path:
    """Robustness to missing modalities: one group per set of present modalities (``R+D`` ...), one bar
    per series -- the tests of one model (EMM, RMM at r = 0.5, model-aware EMM) or one model each.

    Args:
        combinations: The group labels (abbreviated names joined by ``+``).
        abbreviations: ``{name: short}`` used in the labels, spelled out under the axis.
        clean: The clean mIoU, drawn as a dashed line.
    """
    note = ", ".join(f"{s} = {m}" for m, s in (abbreviations or {}).items() if s != m)
    return bar_chart(
        combinations,
        series,
        path,
        title=title,
        ylabel="mIoU (%)",
        xlabel="present modalities" + (f" ({note})" if note else ""),
        reference=None if clean is None else ("clean (all present)", clean),
        value_labels=len(combinations) * max(len(series), 1) <= 24,
        formats=formats,
    )


@_styled
def noise_chart(
    levels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str = "mIoU under noisy modalities",
    formats: Sequence[str] | None = None,
) -> Path:
    """mIoU against the noise level (clean first), one line per series (a model).

    Args:
        levels: The x tick labels, e.g. ``["clean", "low\\nS&P 0.05, σ 0.1", ...]``.
        series: ``{name: one mIoU per level}``.
    """
    fig = _figure(max(5.0, 1.6 + 1.25 * len(levels)), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(levels))
    markers = "osD^vP*X"
    for k, (name, vals) in enumerate(series.items()):
        ys = np.array([_nan(v) for v in vals])
        ax.plot(
            x,
            ys,
            marker=markers[k % len(markers)],
            color=PALETTE[k % len(PALETTE)],
            linewidth=1.4,
            markersize=4.5,
            label=name,
        )
        if len(series) == 1:  # several models: the lines would overlap their labels; the tables hold them
            for xi, v in zip(x, ys):
                if math.isfinite(v):
                    ax.annotate(
                        f"{v:.1f}",
                        (xi, v),
                        textcoords="offset points",
                        xytext=(0, 5),
                        ha="center",
                        fontsize=6.5,
                        color=PALETTE[k % len(PALETTE)],
                    )
    values = _finite([_nan(v) for vs in series.values() for v in vs])
    ax.set_ylim(0.0, max([*values, 1.0]) * 1.15)
    ax.set_xticks(x, list(levels))
    ax.set_xlim(-0.3, len(levels) - 0.7)
    ax.set_ylabel("mIoU (%)")
    ax.set_xlabel("noise level (salt-and-pepper density, Gaussian σ on the normalised input)")
    fig.suptitle(_wrap(title, fig.get_figwidth()))
    if len(series) > 1:
        _legend_above(ax, len(series))
    return save(fig, path, formats)


def similarity_chart(
    per_stage: Mapping[str, Mapping[str, float | None]],
    modalities: Sequence[str],
    path: str | Path,
    *,
    labels: Mapping[str, str] | None = None,
    title: str = "Cosine similarity of each modality's feature with the fused feature",
    formats: Sequence[str] | None = None,
) -> Path:
    """One group per modality, one bar per stage; the last stage is the paper's Tab. 3 number.

    Args:
        per_stage: ``{stage name: {modality: similarity in %}}`` in stage order.
        labels: Display names of the modalities (default the names).
    """
    stages = list(per_stage)
    series = {
        st.replace("stage", "stage ") + (" (Tab. 3)" if i == len(stages) - 1 else ""): [
            per_stage[st].get(m) for m in modalities
        ]
        for i, st in enumerate(stages)
    }
    values = _finite([_nan(v) for vs in series.values() for v in vs])
    return bar_chart(
        [(labels or {}).get(m, m) for m in modalities],
        series,
        path,
        title=title,
        ylabel="cosine similarity (%)",
        ymax=max(100.0, max(values, default=0.0) * 1.1),
        formats=formats,
    )
