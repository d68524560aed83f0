"""Cross-validated training of the grading network: the `train` stage (`stage`).

Repeated stratified k-fold cross-validation over patients (`cv.train_cv`), each fold trained
with early stopping on its validation loss and resumable from its checkpoint (`fold`), one
network's steps and epochs (`step`) with the loop's settings (`settings`). On a GPU the folds
of a run may train side by side as one `StackedDenseNet` (`stacked_densenet`, also run by
`predict` and `explain`; trained by `stacked`), as many as its memory holds (`memory`). What a
run shows while it trains is `progress`; a fold's learning curve `curves`; the paper preset's
epoch time on a CPU `cpu_estimate`. Formats of what a run writes: docs/artifacts.md.
"""

from __future__ import annotations

import importlib

# Each public name and the module that defines it, imported on first use rather than here:
# `ensemble` and `attention` import `train.stacked_densenet` alone, while the training modules
# import `ensemble`, so importing every module here would close a cycle.
_MODULES = {
    "settings": ("SPEED_ONLY", "Settings", "class_weights"),
    "step": ("Evaluation", "FoldData", "augmented", "epoch_batches", "evaluate", "fold_data",
             "score", "train_epoch", "train_step", "trial_step"),
    "fold": ("CHECKPOINT", "FoldRun", "fit_fold", "save_checkpoint"),
    "stacked_densenet": ("StackedDenseNet",),
    "stacked": ("StackedStep", "evaluate_stacked", "fit_stacked", "stacked_cross_entropy",
                "stacked_epoch"),
    "memory": ("GIB", "GPU_MEMORY_HEADROOM", "concurrent_folds", "fitting_folds",
               "fold_memory"),
    "progress": ("Bars", "epoch_line"),
    "curves": ("plot_learning_curve",),
    "cpu_estimate": ("epoch_estimate", "say_epoch_time", "say_epoch_time_before_study"),
    "cv": ("FoldJob", "deterministic", "torch_threads", "train_cv", "train_folds",
           "write_cv_predictions"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
