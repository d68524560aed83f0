"""A fold's learning curve: training and validation loss and validation AUC by epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import save_figure


def plot_learning_curve(history: pd.DataFrame, best_epoch: int, title: str, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="training loss")
    ax.plot(history["epoch"], history["val_loss"], "o-", ms=3, label="validation loss")
    ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("class-weighted cross-entropy")
    auc_ax = ax.twinx()
    auc_ax.plot(history["epoch"], history["val_auc"], "s:", ms=3, color="tab:green",
                label="validation AUC (patients)")
    auc_ax.set_ylim(0, 1)
    auc_ax.set_ylabel("AUC")
    handles = ax.get_legend_handles_labels()
    auc_handles = auc_ax.get_legend_handles_labels()
    ax.legend(handles[0] + auc_handles[0], handles[1] + auc_handles[1], fontsize=8, loc="best")
    ax.set_title(title)
    save_figure(fig, target)
