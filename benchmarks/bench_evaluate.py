"""Speed of `evaluate`'s statistics, each against a baseline measured in the same run.

1. Patient bootstrap of the nine metrics (1000 resamples, n = 158 as the paper's test cohort):
   stacked resamples (evaluate) vs a loop over resamples calling scikit-learn's metrics and an
   unpenalised LogisticRegression for the calibration slope (what one would write by hand).
2. DeLong variance by midranks (evaluate) vs the positive x negative kernel matrix, n = 4000.
3. Tumour volumes of the 12 real TCIA masks: first run vs rerun from the cache (if present).
4. The clinical-utility additions (decision curves, abstention, subgroups) against the metric
   blocks evaluate computed before them, on the demo's evaluations (6 models, 1000 resamples,
   20 patients per site and 40 pooled): the extra share of evaluate's statistics.

Run: .venv/bin/python benchmarks/bench_evaluate.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from sarcograde.evaluate import ALL_METRICS, metric_statistic
from sarcograde.stats import bootstrap, delong_variance, percentile_ci, resample_indices

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 3):
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_bootstrap(n: int = 158, resamples: int = 1000) -> None:
    from scipy.special import logit
    from sklearn import metrics as skm
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.85).astype(int)
    p = np.clip(0.55 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    idx = resample_indices(n, resamples, 0)
    statistic = metric_statistic(0.5, ALL_METRICS)

    def stacked():
        return bootstrap(statistic, y, p, idx)

    def loop():
        out = {name: [] for name in ("auc", "precision", "sensitivity", "specificity", "f1",
                                     "accuracy", "brier", "calibration_slope")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in idx:
                yi, pi = y[i], p[i]
                pred = (pi > 0.5).astype(int)
                one_class = yi.min() == yi.max()
                out["auc"].append(np.nan if one_class else skm.roc_auc_score(yi, pi))
                out["precision"].append(skm.precision_score(yi, pred, zero_division=np.nan))
                out["sensitivity"].append(skm.recall_score(yi, pred, zero_division=np.nan))
                out["specificity"].append(skm.recall_score(yi, pred, pos_label=0,
                                                           zero_division=np.nan))
                out["f1"].append(skm.f1_score(yi, pred))
                out["accuracy"].append(skm.accuracy_score(yi, pred))
                out["brier"].append(skm.brier_score_loss(yi, pi))
                out["calibration_slope"].append(np.nan if one_class else LogisticRegression(
                    C=np.inf, tol=1e-10, max_iter=1000).fit(logit(pi)[:, None], yi).coef_[0, 0])
        return out

    t_fast, fast = timed(stacked)
    t_loop, slow = timed(loop, repeat=1)
    worst = max(abs(a - b) for name in slow
                for a, b in zip(percentile_ci(fast[name])[0], percentile_ci(slow[name])[0]))
    print(f"bootstrap, 9 metrics, {resamples} resamples, n={n}: loop {t_loop:.2f} s (8 metrics), "
          f"stacked {t_fast:.3f} s, speed-up {t_loop / t_fast:.0f}x; "
          f"largest CI-bound difference {worst:.1e}")


def bench_delong(n: int = 4000) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n).astype(bool)
    s = y + rng.normal(0, 1.5, n)

    def kernel():
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        v10, v01 = psi.mean(1), psi.mean(0)
        return v10.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)

    t_fast, fast = timed(lambda: delong_variance(y, s))
    t_slow, slow = timed(kernel)
    print(f"DeLong variance, n={n}: kernel matrix {t_slow:.3f} s, midranks {t_fast:.4f} s, "
          f"speed-up {t_slow / t_fast:.0f}x; relative difference "
          f"{abs(fast[1] - slow[1]) / slow[1]:.1e}")


def bench_volumes() -> None:
    from sarcograde import baselines as bl
    from sarcograde.cohort import load_manifest
    from sarcograde.importers.tcia_sts import import_tcia_sts

    root = REPO.parent / "shared" / "data" / "tcia-sts"
    if not (root / "nifti").is_dir():
        print("tumour volumes: TCIA data not found, skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        import_tcia_sts(root, root / "INFOclinical_STS.xlsx", manifest)
        patients = list(load_manifest(manifest, strict=True))
        cache = Path(tmp) / "volumes.csv"
        t_first, first = timed(lambda: bl.tumour_volumes(patients, "T1", cache.with_suffix(
            f".{time.perf_counter_ns()}.csv")))
        bl.tumour_volumes(patients, "T1", cache)
        t_cached, cached = timed(lambda: bl.tumour_volumes(patients, "T1", cache))
    print(f"tumour volumes, {len(patients)} TCIA masks: measured {t_first:.3f} s, from the cache "
          f"{t_cached:.3f} s, speed-up {t_first / t_cached:.1f}x; same values "
          f"{first == cached}")


def bench_utility(resamples: int = 1000) -> None:
    from sarcograde.evaluate.metrics import metric_block
    from sarcograde.evaluate.subgroups import SUBGROUP_METRICS
    from sarcograde.stats import decision_curve, most_reliable, n_kept, selective_curve

    rng = np.random.default_rng(2)
    for n in (20, 40):  # a demo site, the pooled sites
        y = (rng.random(n) < 0.6).astype(int)
        models = [np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.25, n), 0.01, 0.99)
                  for _ in range(6)]
        spread = rng.uniform(0.01, 0.2, n)
        idx = resample_indices(n, resamples, 0)
        halves = [np.arange(n) < n // 2, np.arange(n) >= n // 2]  # e.g. sex, or the two sites

        def before():
            return [metric_block(y, p, 0.5, idx) for p in models]

        def additions():
            for p in models:
                decision_curve(y, p, idx)
            for p in models[:2]:  # the DL models carry a spread
                k = n_kept(n, 0.9)
                bootstrap(metric_statistic(0.5, ALL_METRICS), y, p, most_reliable(spread, idx, k))
                selective_curve(y, p, spread)
            for where in halves:
                sub = resample_indices(int(where.sum()), resamples, 0)
                for p in models:
                    metric_block(y[where], p[where], 0.5, sub, SUBGROUP_METRICS)

        t_before, _ = timed(before)
        t_added, _ = timed(additions)
        print(f"utility additions, n={n}, 6 models, {resamples} resamples: metric blocks "
              f"{t_before:.2f} s, decision curves + abstention + 2 subgroups {t_added:.2f} s "
              f"({t_added / t_before:.2f}x of the metric blocks)")


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}")
    bench_bootstrap()
    bench_delong()
    bench_volumes()
    bench_utility()
