"""What a run shows while it trains: rich progress bars on a terminal (folds, epochs of the
current fold(s), batches of the epoch), a plain line per fold and epoch elsewhere (a log file)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.progress import Progress, TaskID

from ..console import info, on_terminal


def epoch_line(fold: str, row: dict, max_epochs: int) -> str:
    """A fold's epoch (a `history.csv` row) in one line."""
    return (f"{fold} epoch {row['epoch']}/{max_epochs}: train loss {row['train_loss']:.3f}, "
            f"val loss {row['val_loss']:.3f}, val AUC {row['val_auc']:.2f} "
            f"({row['seconds']:.0f} s)")


@dataclass
class Bars:
    """The progress bars of a run: folds, epochs of the current fold(s), batches of the epoch.

    Off a terminal the bars write no line of their own (one per batch would flood a log): each
    finished epoch is one `epoch_line` instead, and each finished fold says so itself."""

    progress: Progress
    folds: TaskID
    epochs: TaskID
    batches: TaskID
    max_epochs: int

    @classmethod
    def start(cls, progress: Progress, n_folds: int, max_epochs: int) -> "Bars":
        return cls(progress, progress.add_task("folds", total=n_folds, logged=False),
                   progress.add_task("epochs", total=max_epochs, logged=False),
                   progress.add_task("batches", total=None, logged=False), max_epochs)

    def new_epoch(self, epoch: int, n_batches: int):
        """Reset the batch bar; the callback that advances it."""
        self.progress.reset(self.batches, total=n_batches, description=f"epoch {epoch}")
        return lambda: self.progress.advance(self.batches)

    def end_epoch(self, fold: str, row: dict) -> None:
        """Show the fold's finished epoch (its `history.csv` row)."""
        if not on_terminal():
            info(epoch_line(fold, row, self.max_epochs))
            return
        self.progress.update(self.epochs, completed=row["epoch"],
                             description=f"{fold} loss {row['train_loss']:.3f} "
                                         f"val {row['val_loss']:.3f} AUC {row['val_auc']:.2f}")
