"""Figures for the operator: small SVGs made with matplotlib's SVG backend (no display, no files), ready
to sit in a Prefect markdown artifact as `![...](data:image/svg+xml;base64,...)` (the Prefect UI renders
data-URI images and strips inline `<svg>`) and in W&B as `wandb.Html`.

    svg = drift_figure(reference_column, current_column, "age", test="ks", statistic=0.21, p_value=1e-9)
    markdown = image_markdown(svg, "age: reference vs current")

Pure: pandas/numpy in, SVG text out. Text stays text (`svg.fonttype: none`), paths are simplified and
the figures small (4.8 x 2.4 in) so that an image is a few tens of kB at most; `MAX_POINTS` caps the
points an ECDF draws (it is evaluated on a grid of quantiles, not on every row).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_POINTS", "canary_figure", "drift_figure", "image_markdown"]

MAX_POINTS = 200
REFERENCE, CURRENT = "#1f77b4", "#d62728"  # stable / reference blue, canary / current red
STABLE, CANARY = REFERENCE, CURRENT


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("svg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 9, "path.simplify": True,
                         "figure.dpi": 72, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _svg(fig: Any) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # without the XML declaration and doctype


def image_markdown(svg: str, alt: str) -> str:
    """`svg` as a markdown image the Prefect UI renders (a base64 data URI)."""
    data = base64.b64encode(svg.encode()).decode()
    return f"![{alt.replace(']', ')')}](data:image/svg+xml;base64,{data})"


def _ecdf(values: Any) -> tuple[Any, Any]:
    import numpy as np

    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return x, x
    if len(x) > MAX_POINTS:
        q = np.linspace(0, 1, MAX_POINTS)
        return np.quantile(x, q), q
    return x, np.arange(1, len(x) + 1) / len(x)


def drift_figure(reference: Any, current: Any, name: str, *, test: str, statistic: float | None,
                 p_value: float | None, label: str = "feature") -> str:
    """Reference vs current distribution of one column: ECDFs for a numerical column (KS), side-by-side
    bars of the category shares for a categorical one (chi-square); D (or V) and p in the title."""
    import pandas as pd

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 2.4))
    effect = "D" if test == "ks" else "V"
    stat = "" if statistic is None else f"{effect} = {statistic:.3g}"
    p = "" if p_value is None else f"p = {p_value:.2g}"
    ax.set_title(f"{label} {name!s}: " + ", ".join(s for s in (stat, p) if s))
    if test == "ks":
        for values, colour, what in ((reference, REFERENCE, "reference"), (current, CURRENT, "current")):
            x, y = _ecdf(pd.Series(values).dropna())
            ax.step(x, y, where="post", color=colour, label=f"{what} (n={len(pd.Series(values).dropna()):,})",
                    linewidth=1.2)
        ax.set_ylabel("cumulative share")
        ax.set_ylim(0, 1.02)
    else:
        ref = pd.Series(reference).dropna().astype(str).value_counts(normalize=True)
        cur = pd.Series(current).dropna().astype(str).value_counts(normalize=True)
        cats = list(dict.fromkeys([*ref.index[:12], *cur.index[:12]]))[:12]
        xs = range(len(cats))
        ax.bar([i - 0.2 for i in xs], [ref.get(c, 0.0) for c in cats], width=0.4, color=REFERENCE, label="reference")
        ax.bar([i + 0.2 for i in xs], [cur.get(c, 0.0) for c in cats], width=0.4, color=CURRENT, label="current")
        ax.set_xticks(list(xs), [c[:12] for c in cats], rotation=30 if len(cats) > 4 else 0, ha="right"
                      if len(cats) > 4 else "center")
        ax.set_ylabel("share of rows")
    ax.legend(frameon=False, fontsize=7)
    return _svg(fig)


def canary_figure(looks: Sequence[dict[str, Any]], *, max_error_rate: float | None,
                  min_latency_increase: float | None, title: str) -> str:
    """Per look: the error rate of each arm (with the absolute ceiling) and the median latency of each
    arm (with the comparative floor, stable x (1 + min_latency_increase)). `looks`: dicts with `label`
    and, per arm (`canary_*`, `stable_*`), `error_rate` (0..1) and `p50_ms` (None when not measured)."""
    plt = _pyplot()
    fig, (err, lat) = plt.subplots(1, 2, figsize=(6.4, 2.4))
    xs = list(range(len(looks)))
    labels = [str(k["label"]) for k in looks]

    def series(key: str) -> list[float]:
        return [float("nan") if k.get(key) is None else float(k[key]) for k in looks]

    err.plot(xs, [v * 100 for v in series("stable_error_rate")], "o-", color=STABLE, label="stable", markersize=3)
    err.plot(xs, [v * 100 for v in series("canary_error_rate")], "o-", color=CANARY, label="canary", markersize=3)
    if max_error_rate is not None:
        err.axhline(max_error_rate * 100, color="grey", linestyle="--", linewidth=0.8,
                    label=f"ceiling {max_error_rate:.0%}")
    err.set_title("error rate (%)")
    lat.plot(xs, series("stable_p50_ms"), "o-", color=STABLE, label="stable", markersize=3)
    lat.plot(xs, series("canary_p50_ms"), "o-", color=CANARY, label="canary", markersize=3)
    if min_latency_increase is not None:
        floor = [v * (1 + min_latency_increase) for v in series("stable_p50_ms")]
        lat.plot(xs, floor, ":", color="grey", linewidth=0.8, label=f"stable +{min_latency_increase:.0%}")
    lat.set_title("median latency (ms)")
    for ax in (err, lat):
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _svg(fig)
