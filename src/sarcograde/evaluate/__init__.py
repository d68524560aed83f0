"""Evaluation of predictions on a graded cohort (`sarcograde evaluate`, the paper's sections 2.8,
2.9 and 3): read and match the predictions (`inputs`), score every model with bootstrap CIs
(`metrics`, `score`), fit the baselines (`baselines`), analyse overall survival (`survival`), and
write the tables and figures (`tables`, `figures`, `outputs`). `stage` is the command; what it
writes is described in docs/artifacts.md.
"""

from .metrics import ALL_METRICS, metric_block, metric_statistic
from .stage import add_arguments, run

__all__ = ["ALL_METRICS", "add_arguments", "metric_block", "metric_statistic", "run"]
