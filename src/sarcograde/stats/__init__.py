"""Statistics of a binary grading model, written with numpy/scipy and checked against references.

`metrics` (confusion counts, ROC, AUC, Youden), `calibration` (reliability curve, logistic
recalibration), `decision_curve` (net benefit), `selective` (abstention by a reliability
score), `bootstrap` (patient-level percentile CIs), `delong` (AUC variance and the DeLong test).
Every function that takes `(y, p)` also takes stacks of them, shape `(..., n)`, so that one code
path serves the point estimate and the bootstrap resamples.
"""

from .bootstrap import bootstrap, percentile_ci, resample_indices, roc_band, tpr_at
from .calibration import (calibration_intercept, calibration_slope, recalibrated,
                          recalibration_fit, reliability_curve, wilson_interval)
from .decision_curve import THRESHOLDS, decision_curve, net_benefit, treat_all
from .delong import DeLongResult, delong_test, delong_test_unpaired, delong_variance
from .metrics import (METRICS, auc, binary_metrics, classify, confusion_counts, roc_curve,
                      youden_threshold)
from .selective import most_reliable, n_kept, selective_curve

__all__ = ["METRICS", "THRESHOLDS", "DeLongResult", "auc", "binary_metrics", "bootstrap",
           "calibration_intercept", "calibration_slope", "classify", "confusion_counts",
           "decision_curve", "delong_test", "delong_test_unpaired", "delong_variance",
           "most_reliable", "n_kept", "net_benefit", "percentile_ci", "recalibrated",
           "recalibration_fit", "reliability_curve", "resample_indices", "roc_band", "roc_curve",
           "selective_curve", "tpr_at", "treat_all", "wilson_interval", "youden_threshold"]
