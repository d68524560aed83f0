"""Overall survival by risk group: Kaplan-Meier estimates, the log-rank test and KM plots.

Implemented with numpy/scipy (tests compare against lifelines and `scipy.stats.logrank`).
Times are in months; event 1 = death, 0 = censored (alive at last follow-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2, norm


@dataclass(frozen=True)
class KaplanMeier:
    """The Kaplan-Meier estimate at each distinct observed time (deaths and censorings), from 0."""

    time: np.ndarray       # 0, then the distinct observed times
    survival: np.ndarray   # S(t), right-continuous step function
    ci_low: np.ndarray     # 95% pointwise interval, exponential Greenwood (log-log) as lifelines
    ci_high: np.ndarray
    at_risk: np.ndarray    # number at risk just before each time
    events: np.ndarray     # deaths at each time
    censored: np.ndarray   # censorings at each time

    @property
    def n(self) -> int:
        return int(self.at_risk[0])

    def survival_at(self, t) -> np.ndarray:
        """S(t) for any times (the step function's value, right-continuous)."""
        return self.survival[np.searchsorted(self.time, t, side="right") - 1]

    def number_at_risk(self, t) -> np.ndarray:
        """Patients still under observation at time t (observed time >= t)."""
        t = np.atleast_1d(np.asarray(t, float))
        later = np.searchsorted(self.time, t, side="left")
        remaining = np.r_[self.at_risk, self.at_risk[-1] - self.events[-1] - self.censored[-1]]
        return remaining[later]

    @property
    def median(self) -> float:
        """Median survival: the first time S(t) <= 0.5; NaN when the curve stays above 0.5."""
        below = np.flatnonzero(self.survival <= 0.5)
        return float(self.time[below[0]]) if below.size else float("nan")


def _check(time, event) -> tuple[np.ndarray, np.ndarray]:
    time, event = np.asarray(time, float), np.asarray(event, float)
    if time.shape != event.shape or time.ndim != 1:
        raise ValueError("time and event must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(time)) and np.all(time >= 0)):
        raise ValueError("survival times must be finite and non-negative")
    if not np.all(np.isin(event, (0, 1))):
        raise ValueError("events must be 0 (censored) or 1 (death)")
    return time, event.astype(int)


def kaplan_meier(time, event) -> KaplanMeier:
    """Kaplan-Meier estimate with the exponential Greenwood 95% interval."""
    time, event = _check(time, event)
    if time.size == 0:
        raise ValueError("no patients")
    distinct, inverse = np.unique(time, return_inverse=True)
    deaths = np.bincount(inverse, weights=event, minlength=len(distinct))
    total = np.bincount(inverse, minlength=len(distinct))
    at_risk = len(time) - np.r_[0, np.cumsum(total)[:-1]]
    survival = np.cumprod(1 - deaths / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(deaths / (at_risk * (at_risk - deaths)))
        log_s = np.log(survival)
        half = norm.ppf(0.975) * np.sqrt(greenwood / log_s ** 2)
        log_minus_log = np.log(-log_s)
        low, high = np.exp(-np.exp(log_minus_log + half)), np.exp(-np.exp(log_minus_log - half))
    undefined = ~np.isfinite(low) | ~np.isfinite(high)
    low = np.where(undefined, survival, low)   # S = 1 (no death yet) or S = 0: no interval
    high = np.where(undefined, survival, high)
    if distinct[0] > 0:  # the curve starts at S(0) = 1
        distinct, survival = np.r_[0.0, distinct], np.r_[1.0, survival]
        low, high = np.r_[1.0, low], np.r_[1.0, high]
        at_risk, deaths = np.r_[len(time), at_risk], np.r_[0, deaths]
        total = np.r_[0, total]
    return KaplanMeier(distinct, survival, low, high, at_risk.astype(int), deaths.astype(int),
                       (total - deaths).astype(int))


@dataclass(frozen=True)
class LogRank:
    statistic: float        # chi-square, k - 1 degrees of freedom
    df: int
    p: float
    observed: dict          # group -> deaths
    expected: dict          # group -> expected deaths under equal hazards


def logrank_test(time, event, group) -> LogRank:
    """Log-rank (Mantel-Cox) test of equal survival in k >= 2 groups."""
    time, event = _check(time, event)
    group = np.asarray(group)
    labels = list(dict.fromkeys(group.tolist()))
    if len(labels) < 2:
        raise ValueError("the log-rank test needs at least two groups")
    if event.sum() == 0:
        raise ValueError("the log-rank test needs at least one death")
    event_times = np.unique(time[event == 1])
    # (groups, event times): number at risk and deaths
    at_risk = np.array([[np.sum((group == g) & (time >= t)) for t in event_times] for g in labels])
    deaths = np.array([[np.sum((group == g) & (time == t) & (event == 1)) for t in event_times]
                       for g in labels])
    n, d = at_risk.sum(0), deaths.sum(0)
    share = at_risk / n
    expected = (d * share).sum(1)
    observed = deaths.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie_factor = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    # hypergeometric covariance of the deaths per group, summed over event times
    cov = (np.einsum("t,gt,ht->gh", tie_factor, share, -share)
           + np.diag((tie_factor * share).sum(1)))
    diff = (observed - expected)[:-1]
    statistic = float(diff @ np.linalg.pinv(cov[:-1, :-1]) @ diff)
    df = len(labels) - 1
    return LogRank(statistic, df, float(chi2.sf(statistic, df)),
                   dict(zip(labels, observed.astype(int).tolist())),
                   dict(zip(labels, expected.tolist())))


def bonferroni(pvalues) -> np.ndarray:
    """Bonferroni-adjusted p-values: p times the number of tests, capped at 1 (NaN kept)."""
    p = np.asarray(pvalues, float)
    return np.minimum(1.0, p * np.isfinite(p).sum())


def at_risk_table(curves: dict[str, KaplanMeier], times) -> pd.DataFrame:
    """Numbers at risk per group (rows) at the given times (columns)."""
    return pd.DataFrame({name: km.number_at_risk(times) for name, km in curves.items()},
                        index=[f"{t:g}" for t in times]).T


def risk_times(max_time: float, n_ticks: int = 6) -> np.ndarray:
    """Round tick times (months) from 0 that cover the follow-up."""
    if max_time <= 0:
        return np.array([0.0])
    step = next(s for s in (1, 3, 6, 12, 24, 36, 60, 120, 240, 1e9) if max_time / s <= n_ticks - 1)
    return np.arange(0, max_time + 1e-9, step, dtype=float)


def _draw_kaplan_meier(ax, ax_table, curves: dict[str, KaplanMeier], title: str,
                       subtitle: str) -> None:
    """KM curves with 95% bands and censoring ticks on `ax`, the numbers at risk on `ax_table`."""
    import matplotlib.pyplot as plt

    max_time = max(float(km.time[-1]) for km in curves.values())
    ticks = risk_times(max_time)
    table = at_risk_table(curves, ticks)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, km) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        ax.step(km.time, km.survival, where="post", color=colour,
                label=f"{name} (n={km.n}, deaths={int(km.events.sum())})")
        ax.fill_between(km.time, km.ci_low, km.ci_high, step="post", color=colour, alpha=0.15,
                        linewidth=0)
        censored = km.censored > 0
        ax.plot(km.time[censored], km.survival[censored], "|", color=colour, markersize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("overall survival")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax_table.set_ylim(-0.5, len(curves) - 0.5)
    ax_table.invert_yaxis()
    for row, name in enumerate(table.index):
        colour = colours[row % len(colours)]
        for t, count in zip(ticks, table.loc[name]):
            ax_table.text(t, row, str(int(count)), ha="center", va="center", fontsize=8,
                          color=colour)
    ax_table.set_yticks(range(len(curves)), list(table.index), fontsize=8)
    ax_table.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax_table.spines[side].set_visible(False)
    ax_table.set_title("number at risk", fontsize=8, loc="left")
    ax_table.set_xticks(ticks)
    ax_table.set_xlim(-0.02 * max_time - 0.5, max_time * 1.04 + 0.5)
    ax_table.set_xlabel("months")


def plot_kaplan_meier(curves: dict[str, KaplanMeier], title: str, subtitle: str = ""):
    """KM curves with 95% bands and censoring ticks, and the numbers at risk under the plot."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_table) = plt.subplots(
        2, 1, figsize=(6.4, 4.6 + 0.25 * len(curves)), sharex=True,
        gridspec_kw={"height_ratios": [4, 0.45 + 0.3 * len(curves)]})
    _draw_kaplan_meier(ax, ax_table, curves, title, subtitle)
    fig.tight_layout()
    return fig


def plot_kaplan_meier_panel(panels: list[tuple[dict[str, KaplanMeier], str, str]],
                            columns: int = 3):
    """Several KM plots (curves, title, subtitle) side by side, at-risk table under each."""
    import matplotlib.pyplot as plt

    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    groups = max(len(curves) for curves, _, _ in panels)
    fig = plt.figure(figsize=(6.4 * columns, (4.6 + 0.25 * groups) * rows))
    grid = fig.add_gridspec(rows, columns, hspace=0.35, wspace=0.3)
    for i, (curves, title, subtitle) in enumerate(panels):
        cell = grid[divmod(i, columns)].subgridspec(
            2, 1, height_ratios=[4, 0.45 + 0.3 * groups], hspace=0.3)
        ax = fig.add_subplot(cell[0])
        _draw_kaplan_meier(ax, fig.add_subplot(cell[1], sharex=ax), curves, title, subtitle)
    return fig
