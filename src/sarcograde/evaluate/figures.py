"""The evaluation's figures: ROC curves (the reference model with its bootstrap 95% band and its
argmax point), reliability diagrams with Wilson intervals and the patients per bin, and decision
curves."""

from __future__ import annotations

import numpy as np

from ..outcome import GRADE_OUTCOME, Outcome
from ..stats import reliability_curve, roc_band, roc_curve

ROC_GRID = np.linspace(0, 1, 101)


def _finish(fig, ax, title: str, legend: str):
    """The axes' grid, legend (at `legend`) and title; the figure laid out."""
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def roc_figure(y: np.ndarray, curves: dict[str, tuple[np.ndarray, dict]], reference: str,
               indices: np.ndarray, cohort: str = "test cohort",
               outcome: Outcome = GRADE_OUTCOME):
    """ROC curves of all models; the `reference` one with its bootstrap 95% band and argmax
    point."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    for name, (p, block) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        auc, ci = block["auc"]["value"], block["auc"]["ci95"]
        label = f"{name}: AUC {auc:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        line, = ax.plot(fpr, tpr, linewidth=2 if name == reference else 1.2, label=label,
                        zorder=3 if name == reference else 2)
        if name == reference:
            low, high = roc_band(y, p, indices, ROC_GRID)
            ax.fill_between(ROC_GRID, low, high, color=line.get_color(), alpha=0.2, linewidth=0,
                            label="95% CI (bootstrap)")
            c = block["confusion"]
            ax.plot(c["fp"] / (c["fp"] + c["tn"]), c["tp"] / (c["tp"] + c["fn"]), "o",
                    color=line.get_color(), label="argmax threshold", zorder=4)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    return _finish(fig, ax, f"ROC, {cohort} (n={len(y)}, {int(y.sum())} {outcome.classes[1]})",
                   "lower right")


def _calibration_text(block: dict) -> str:
    return ", ".join(f"{label} {block[key]['value']:.2f}" for label, key in
                     (("slope", "calibration_slope"), ("intercept", "calibration_intercept"))
                     if block[key]["value"] is not None)


def calibration_figure(y: np.ndarray, models: dict[str, tuple[np.ndarray, dict]], n_bins: int,
                       cohort: str = "test cohort", outcome: Outcome = GRADE_OUTCOME):
    """Reliability diagram of each model with Wilson 95% intervals, and the patient count of each
    bin; one model's slope and intercept in the title, several models' in the legend."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5.2, 6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="perfect calibration")
    single = len(models) == 1
    counts = []
    for name, (p, block) in models.items():
        curve = reliability_curve(y, p, n_bins)
        filled = curve["count"] > 0
        text = _calibration_text(block)
        ax.errorbar(curve["mean_predicted"][filled], curve["observed"][filled],
                    yerr=[curve["observed"][filled] - curve["observed_low"][filled],
                          curve["observed_high"][filled] - curve["observed"][filled]],
                    fmt="o-", capsize=3, alpha=1 if single else 0.8,
                    label=f"{name} (Wilson 95% CI)" if single or not text else f"{name}: {text}")
        counts.append(curve["count"])
    title = f"calibration, {cohort} (n={len(y)})"
    text = _calibration_text(next(iter(models.values()))[1]) if single else ""
    ax.set_title(title + (f"\n{text}" if text else ""), fontsize=10)
    ax.set_ylabel(f"observed fraction {outcome.classes[1]}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    edges = curve["edges"]
    width = np.diff(edges) * 0.9 / len(models)
    for k, count in enumerate(counts):  # bins side by side, one bar per model
        centres = edges[:-1] + np.diff(edges) * 0.05 + width * (k + 0.5)
        ax_count.bar(centres, count, width=width, color="0.6" if single else f"C{k}")
        for x, c in zip(centres, count):
            if c and single:
                ax_count.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
    ax_count.set_ylabel("patients")
    ax_count.set_xlabel(f"predicted probability of {outcome.classes[1]}")
    ax_count.set_xlim(0, 1)
    ax_count.set_ylim(0, max(1, max(c.max() for c in counts)) * 1.25)
    fig.tight_layout()
    return fig


def decision_figure(curves, reference: str, cohort: str = "test cohort"):
    """Net benefit of every model against the threshold probability (decision_curve.csv's
    frame), the `reference` model with its bootstrap 95% band, beside treat all and treat none."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    first = curves[curves["model"] == reference]
    t = first["threshold"].to_numpy()
    treat_all = first["treat_all"].to_numpy()
    ax.plot(t, treat_all, color="0.45", linewidth=1.2, label="treat all")
    ax.axhline(0, color="0.2", linewidth=1, linestyle="--", label="treat none")
    for name, curve in curves.groupby("model", sort=False):
        line, = ax.plot(curve["threshold"], curve["net_benefit"], label=name,
                        linewidth=2 if name == reference else 1.2,
                        zorder=3 if name == reference else 2)
        if name == reference:
            ax.fill_between(curve["threshold"], curve["net_benefit_ci_low"],
                            curve["net_benefit_ci_high"], color=line.get_color(), alpha=0.2,
                            linewidth=0, label=f"{name}: 95% CI (bootstrap)")
    # treat all falls steeply at high thresholds: the axis stops a little below zero
    top = max(float(np.nanmax(curves["net_benefit_ci_high"])), float(np.nanmax(treat_all)), 0.1)
    ax.set_ylim(-0.15 * top, top * 1.1)
    ax.set_xlim(t.min(), t.max())
    ax.set_xlabel("threshold probability of high grade")
    ax.set_ylabel("net benefit")
    return _finish(fig, ax, f"decision curves, {cohort}", "upper right")


def selective_figure(curves, coverage: float, cohort: str = "test cohort"):
    """AUC and accuracy of the patients kept against the share kept (selective_prediction.csv's
    frame), one line per model, the chosen coverage marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True)
    for name, curve in curves.groupby("model", sort=False):
        for ax, metric in zip(axes, ("auc", "accuracy")):
            ax.plot(curve["coverage"], curve[metric], label=name, linewidth=1.4)
    for ax, label in zip(axes, ("AUC of the patients kept", "accuracy of the patients kept")):
        ax.axvline(coverage, color="0.4", linestyle="--", linewidth=1,
                   label=f"coverage {coverage:.0%}")
        ax.set_xlabel("share of patients kept (lowest ensemble spread first)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"selective prediction, {cohort}", fontsize=10)
    fig.tight_layout()
    return fig


def subgroup_figure(groups: list[dict], overall: dict[str, float | None],
                    cohort: str = "test cohort"):
    """Forest plot of every model's AUC with its 95% CI per subgroup (metrics.json's
    `subgroups.groups`), the models side by side in each row, their AUC on everyone dashed."""
    import matplotlib.pyplot as plt

    names = list(groups[0]["models"])
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.32 * len(groups) * max(1, len(names) / 2)))
    offsets = (np.arange(len(names)) - (len(names) - 1) / 2) * 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        for row, group in enumerate(groups):
            block = group["models"][name]["auc"]
            if block["value"] is None:
                continue
            y = row + offsets[k]
            ci = block["ci95"] or [block["value"]] * 2
            ax.plot(ci, [y, y], color=f"C{k}", linewidth=1.2)
            ax.plot(block["value"], y, "s", color=f"C{k}", markersize=4,
                    label=name if row == 0 else None)
        if overall.get(name) is not None:
            ax.axvline(overall[name], color=f"C{k}", linestyle=":", linewidth=1)
    ax.axvline(0.5, color="0.5", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{g['variable']}: {g['level']} (n={g['n']}, {g['n_high']} high)"
                        for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUC (95% bootstrap CI); dotted: the model on every patient")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(f"AUC by subgroup, {cohort}", fontsize=10)
    fig.tight_layout()
    return fig
